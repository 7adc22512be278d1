/** One thing wrong with the configuration. `key` is the dotted path (`sources[1].backend`), if any. */
export interface ConfigProblem {
  key?: string;
  value?: unknown;
  reason: string;
  /** The full line shown to the user. */
  message: string;
  /** The environment variable the value came from, when it did. */
  origin?: string;
  /** The file (config file, or the settings `set` requests kept) and the place in it where the key is written. */
  file?: string;
  line?: number;
  column?: number;
}

/**
 * Every configuration problem found in one load. `key`, `value` and `reason` describe the first problem;
 * `problems` holds all of them and the message has one line each, so `config check` shows everything
 * wrong at once instead of one error per attempt.
 */
export class ConfigError extends Error {
  readonly key: string | undefined;
  readonly value: unknown;
  readonly reason: string;
  readonly problems: readonly ConfigProblem[];

  constructor(problems: ConfigProblem | ConfigProblem[], options?: { cause?: unknown }) {
    const list = Array.isArray(problems) ? problems : [problems];
    if (list.length === 0) throw new TypeError('ConfigError needs at least one problem');
    super(list.map((p) => p.message).join('\n'), options);
    this.name = 'ConfigError';
    this.problems = list;
    const first = list[0]!;
    this.key = first.key;
    this.value = first.value;
    this.reason = first.reason;
  }
}

const MAX_SHOWN_VALUE = 120;

/** A value as shown in messages: JSON, shortened, credentials in URLs masked. */
export function showValue(value: unknown): string {
  let text: string;
  try {
    text = value === undefined ? 'undefined' : (JSON.stringify(value) ?? String(value));
  } catch {
    // Too deep for JSON.stringify (and String() would recurse as deep): say what it is.
    text = Object.prototype.toString.call(value);
  }
  // Cut before masking: the mask is a regular expression over the whole text.
  if (text.length > MAX_SHOWN_VALUE * 4) text = text.slice(0, MAX_SHOWN_VALUE * 4);
  text = maskUrlCredentials(text);
  return text.length > MAX_SHOWN_VALUE ? `${text.slice(0, MAX_SHOWN_VALUE)}…` : text;
}

/** `invalid configuration: mqtt.qos = 7: must be one of [0,1,2]` */
export function invalidValue(key: string, value: unknown, reason: string, origin?: string): ConfigProblem {
  const from = origin ? ` (from ${origin})` : '';
  const problem: ConfigProblem = { key, value, reason, message: `invalid configuration: ${key} = ${showValue(value)}${from}: ${reason}` };
  if (origin) problem.origin = origin;
  return problem;
}

/**
 * `problem` with the place of its key in a file added: `… (in /etc/inceptiond/config.yaml, line 3, column 5)`.
 * `entry` (`sources[1]`) is named when the key itself is not written there (a required key left out) and
 * the place is that of the entry.
 */
export function withLocation(problem: ConfigProblem, where: { file: string; line: number; column: number; entry?: string }): ConfigProblem {
  const entry = where.entry ? `${where.entry}, ` : '';
  return {
    ...problem,
    file: where.file,
    line: where.line,
    column: where.column,
    message: `${problem.message} (in ${entry}${where.file}, line ${where.line}, column ${where.column})`,
  };
}

export function unknownKey(key: string, suggestion?: string): ConfigProblem {
  const hint = suggestion ? ` (did you mean ${suggestion}?)` : '';
  return { key, reason: 'unknown key', message: `unknown key: ${key}${hint}` };
}

export function fileProblem(message: string, reason: string): ConfigProblem {
  return { reason, message };
}

/** user:password@ in any scheme://…, and secret-looking query parameters. */
export function maskUrlCredentials(text: string): string {
  return (
    text
      // The lookbehind anchors the scheme at its start: without it a long run of letters is tried from every
      // position (quadratic; 10 s for 100 000 characters).
      .replace(/(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*:\/\/[^\s/:@"]*):[^\s/@"]*@/gi, '$1:***@')
      .replace(/([?&](?:password|passwd|pass|token|secret|key|auth|sig|signature)=)[^&\s"]*/gi, '$1***')
  );
}
