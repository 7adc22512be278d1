/**
 * Requests on `<base>/request/<op>`, answered on `<base>/response/<op>` (or, for an MQTT 5 request,
 * on its response topic with its correlation data): status, metrics, info, pause, resume, snapshot,
 * reload and set. Each checks its parameters and names the field that is wrong; `control.enabled` and
 * `control.allow` are read per request, so a reload changes them at once. The read-only operations
 * (status, metrics, info) only read what the daemon already holds.
 */
import { CONTROL_OPERATIONS, type ControlOperation } from '../config/index.js';
import { publishSnapshot } from './snapshot.js';
import type { Feature, FeatureContext } from './types.js';

type FieldKind = 'string' | 'boolean' | 'object';
type Params = Record<string, unknown>;

/** Fields each operation takes (`transaction` is always allowed: it is echoed). */
const FIELDS: Record<ControlOperation, Record<string, FieldKind>> = {
  status: {},
  metrics: {},
  info: {},
  pause: { source: 'string', paused: 'boolean' },
  resume: { source: 'string' },
  snapshot: { source: 'string' },
  reload: {},
  set: { config: 'object', persist: 'boolean' },
};

export function controlFeature(): Feature {
  return {
    name: 'control',
    start(ctx: FeatureContext) {
      const handlers: Record<ControlOperation, (params: Params) => unknown> = {
        status: () => ctx.status.payload(),
        // peek, not snapshot: a request must not reset the interval the metrics topic reports on.
        metrics: () => ctx.metrics.peek(),
        info: () => ctx.operations.info(),
        pause: (p) => pause(ctx, p.source as string | undefined, (p.paused as boolean | undefined) ?? true),
        resume: (p) => pause(ctx, p.source as string | undefined, false),
        snapshot: (p) => publishSnapshot(ctx, sourceOrOnly(ctx, p.source as string | undefined)),
        reload: () => ctx.operations.reload(),
        set: (p) => {
          if (p.config === undefined) throw new Error('config: required, e.g. {"config": {"inference": {"topK": 3}}}');
          return ctx.operations.set(p.config as Params, (p.persist as boolean | undefined) ?? false);
        },
      };
      for (const op of CONTROL_OPERATIONS) {
        ctx.publisher.onRequest(op, async (body) => {
          let ok = false;
          try {
            allowed(ctx, op);
            const result = await handlers[op](checkFields(op, body));
            ok = true;
            return result;
          } finally {
            ctx.metrics.requestAnswered(op, ok);
          }
        });
      }
    },
    stop() {},
  };
}

function allowed(ctx: FeatureContext, op: ControlOperation): void {
  const { enabled, allow } = ctx.config().control;
  if (!enabled) throw new Error('control is disabled (control.enabled is false)');
  if (!allow.includes(op)) throw new Error(`operation "${op}" is not allowed (control.allow: ${allow.join(', ') || 'none'})`);
}

/** The body's fields, checked against the operation's: an unknown field or a wrong type is named. */
function checkFields(op: ControlOperation, body: Params): Params {
  const fields = FIELDS[op];
  for (const [name, value] of Object.entries(body)) {
    if (name === 'transaction') continue;
    const kind = Object.hasOwn(fields, name) ? fields[name] : undefined;
    if (!kind) {
      const known = Object.keys(fields);
      throw new Error(`${name}: unknown field for "${op}" (${known.length ? `known: ${known.join(', ')}` : 'it takes none'})`);
    }
    const actual = Array.isArray(value) ? 'array' : value === null ? 'null' : typeof value;
    if (actual !== kind) throw new Error(`${name}: must be ${kind === 'object' ? 'an' : 'a'} ${kind}, got ${describe(value, actual)}`);
  }
  return body;
}

function pause(ctx: FeatureContext, source: string | undefined, paused: boolean) {
  const changed = ctx.sources.setPaused(source, paused);
  const ids = ctx.sources.ids();
  return { changed, paused: ids.filter((id) => ctx.sources.isPaused(id)) };
}

/** The named source, or the only one when none is named. */
function sourceOrOnly(ctx: FeatureContext, source: string | undefined): string {
  if (source !== undefined) return source;
  const ids = ctx.sources.ids();
  if (ids.length === 1) return ids[0]!;
  throw new Error(`source: required when there are several sources (${ids.join(', ')})`);
}

/** A short account of a wrong value: the type, and the value itself when it is short (never a huge or deep echo). */
function describe(value: unknown, type: string): string {
  if (type === 'object' || type === 'array') return type;
  const text = String(value);
  return text.length <= 40 ? `${type} ${JSON.stringify(value)}` : type;
}
