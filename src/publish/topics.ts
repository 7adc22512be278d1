/**
 * MQTT topic layout (docs/ARCHITECTURE.md, "Contracts"). Every topic the daemon publishes or subscribes to is built here,
 * so a bad base topic or source id is rejected once, with a clear message, at startup.
 */

export class TopicError extends Error {
  override name = 'TopicError';
}

/** Source ids that would make `<base>/<source>/labels` collide with the request/response topics. */
const RESERVED_LEVELS = new Set(['request', 'response']);

export interface Topics {
  readonly base: string;
  /** Retained daemon status; also the will topic. */
  readonly status: string;
  readonly metrics: string;
  /** Subscription filter for every control request. */
  readonly requestWildcard: string;
  labels(sourceId: string): string;
  snapshot(sourceId: string): string;
  /** Retained availability of one source (`online`, `degraded`, `offline` …). */
  sourceStatus(sourceId: string): string;
  request(op: string): string;
  response(op: string): string;
  /** The op of a request topic, or null when the topic is not a request of this base. */
  requestOp(topic: string): string | null;
}

export function defaultBaseTopic(deviceId: string): string {
  checkLevel(deviceId, 'deviceId');
  return `inceptiond/${deviceId}`;
}

/** Returns the base topic unchanged when it is valid, throws TopicError otherwise. */
export function validateBaseTopic(base: string): string {
  if (typeof base !== 'string' || base.length === 0) throw new TopicError('base topic must be a non-empty string');
  if (base.startsWith('$')) throw new TopicError(`base topic "${base}" must not start with "$" (reserved for the broker)`);
  if (Buffer.byteLength(base, 'utf8') > 60_000) throw new TopicError('base topic is too long');
  const levels = base.split('/');
  levels.forEach((level, i) => {
    if (level === '') throw new TopicError(`base topic "${base}" has an empty level at position ${i + 1}`);
    checkChars(level, `base topic "${base}"`);
  });
  return base;
}

/** A source id is exactly one topic level; throws TopicError otherwise. */
export function validateSourceId(sourceId: string): string {
  checkLevel(sourceId, 'source id');
  if (RESERVED_LEVELS.has(sourceId)) {
    throw new TopicError(`source id "${sourceId}" is reserved (it would collide with <base>/${sourceId}/<op>)`);
  }
  return sourceId;
}

export function validateOp(op: string): string {
  checkLevel(op, 'request op');
  return op;
}

export function topicsFor(baseTopic: string): Topics {
  const base = validateBaseTopic(baseTopic);
  const requestPrefix = `${base}/request/`;
  return {
    base,
    status: `${base}/status`,
    metrics: `${base}/metrics`,
    requestWildcard: `${base}/request/+`,
    labels: (sourceId) => `${base}/${validateSourceId(sourceId)}/labels`,
    snapshot: (sourceId) => `${base}/${validateSourceId(sourceId)}/snapshot`,
    sourceStatus: (sourceId) => `${base}/${validateSourceId(sourceId)}/status`,
    request: (op) => `${requestPrefix}${validateOp(op)}`,
    response: (op) => `${base}/response/${validateOp(op)}`,
    requestOp: (topic) => {
      if (!topic.startsWith(requestPrefix)) return null;
      const op = topic.slice(requestPrefix.length);
      return op.length > 0 && !op.includes('/') ? op : null;
    },
  };
}

function checkLevel(value: string, what: string): void {
  if (typeof value !== 'string' || value.length === 0) throw new TopicError(`${what} must be a non-empty string`);
  if (value.includes('/')) throw new TopicError(`${what} "${value}" must not contain "/"`);
  checkChars(value, `${what} "${value}"`);
}

function checkChars(value: string, what: string): void {
  if (value.includes('+') || value.includes('#')) throw new TopicError(`${what} must not contain the wildcards "+" or "#"`);
  if (value.includes('\u0000')) throw new TopicError(`${what} must not contain NUL`);
}
