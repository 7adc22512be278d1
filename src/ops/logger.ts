import { fstatSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { isatty } from 'node:tty';
import { pino, type DestinationStream, type Logger } from 'pino';
import type PinoPretty from 'pino-pretty';
import { maskUrlCredentials, type LogFormat } from '../config/index.js';
import { packageVersion } from './package-info.js';

export type { Logger } from 'pino';

/**
 * Paths pino replaces with "[redacted]". pino's redaction has no recursive wildcard, so the likely
 * places are listed: a secret at the top of a log object, one level down, and in a config or request.
 */
export const REDACT_PATHS: readonly string[] = [
  'password',
  '*.password',
  'config.mqtt.password',
  'mqtt.password',
  'passphrase',
  '*.passphrase',
  'secret',
  '*.secret',
  'token',
  '*.token',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'req.headers.authorization',
  'headers.cookie',
];

export interface LoggerOptions {
  level: string;
  /** Logged as "name" (e.g. "inceptiond"). */
  name?: string;
  /** The file descriptor lines go to when no `destination` is given: 1 (stdout, the daemon's) by default, 2 for a one-shot command. */
  fd?: number;
  /** Where lines go instead of `fd` (tests). It counts as a terminal when it has `isTTY: true`. */
  destination?: DestinationStream;
  /** json: one JSON object per line; pretty: readable lines; auto (default): pretty when the output is a terminal. */
  format?: LogFormat;
  /** Where JOURNAL_STREAM and NO_COLOR are read (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/**
 * Logs with ISO timestamps, pid, hostname and version: JSON lines, or readable lines on a terminal
 * (`format`). Writes are synchronous: at our volume (a few lines a minute at info) the cost is nil, and
 * a `fatal` logged right before process.exit() — or before systemd's watchdog SIGABRT — is never lost
 * in a buffer. Every line goes through maskingDestination (credentials in URLs masked wherever they
 * are) before it is formatted, and under journald each line starts with its priority (journalPriority).
 */
export function createLogger(options: LoggerOptions): Logger {
  const env = options.env ?? process.env;
  const fd = options.fd ?? 1;
  const sink = options.destination ?? pino.destination({ dest: fd, sync: true });
  const tty = options.destination ? (options.destination as { isTTY?: unknown }).isTTY === true : isatty(fd);
  const format = resolveLogFormat(options.format ?? 'auto', tty);
  const journal = options.destination ? !!env.JOURNAL_STREAM : isJournalStream(fd, env);
  const prettify =
    format === 'pretty'
      ? loadPinoPretty().prettyFactory({
          colorize: tty && !env.NO_COLOR,
          singleLine: true,
          translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l',
          ignore: 'pid,hostname,version,name',
        })
      : undefined;
  return pino(
    {
      level: options.level,
      ...(options.name === undefined ? {} : { name: options.name }),
      base: { pid: process.pid, hostname: os.hostname(), version: packageVersion },
      timestamp: pino.stdTimeFunctions.isoTime,
      serializers: { err: pino.stdSerializers.err, error: pino.stdSerializers.err },
      redact: { paths: [...REDACT_PATHS], censor: '[redacted]' },
    },
    // Masked first, on the JSON line (what it masks is found in every field), then formatted.
    maskingDestination(
      lineDestination(sink, (line) => {
        const text = prettify ? prettify(line) : line;
        return journal ? withJournalPriority(text, journalPriority(levelOf(line))) : text;
      }),
    ),
  );
}

/**
 * pino-pretty, loaded only when a logger is pretty: it costs ~20 ms to load, which `--help`, `config
 * check` and the service (JSON) need not pay. A CommonJS module, so require() keeps createLogger synchronous.
 */
function loadPinoPretty(): typeof PinoPretty {
  return createRequire(import.meta.url)('pino-pretty') as typeof PinoPretty;
}

/** `auto` is pretty on a terminal and JSON anywhere else (a pipe, a file, the journal). */
export function resolveLogFormat(format: LogFormat, isTTY: boolean): 'json' | 'pretty' {
  return format === 'auto' ? (isTTY ? 'pretty' : 'json') : format;
}

/**
 * Whether `fd` is connected to journald: systemd sets JOURNAL_STREAM to the `device:inode` of the
 * stream it gives a service as stdout/stderr. Compared, not just present: a shell started from a
 * service (or a desktop session's terminal) inherits the variable while its output goes elsewhere.
 */
export function isJournalStream(fd: number, env: NodeJS.ProcessEnv = process.env): boolean {
  const expected = env.JOURNAL_STREAM;
  if (!expected) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return expected === `${st.dev}:${st.ino}`;
  } catch {
    return false;
  }
}

/**
 * The sd-daemon priority (syslog severity) of a pino level: fatal 2 (crit), error 3 (err), warn 4
 * (warning), info 6 (info), debug and trace 7 (debug). journald strips the `<N>` prefix from a line and
 * files it with that priority, so `journalctl -p warning` shows warnings and worse.
 */
export function journalPriority(level: number): number {
  if (level >= 60) return 2;
  if (level >= 50) return 3;
  if (level >= 40) return 4;
  if (level >= 30) return 6;
  return 7;
}

/** `<N>` before every line of `text` (a pretty error spans several; journald reads each on its own). */
function withJournalPriority(text: string, priority: number): string {
  const prefix = `<${priority}>`;
  const lines = text.split('\n');
  const last = lines.length - 1;
  return lines.map((l, i) => (i === last && l === '' ? l : prefix + l)).join('\n');
}

/** pino writes the level first (`{"level":40,`), and masking keeps it there; a line that is not pino's counts as info. */
function levelOf(line: string): number {
  const m = /^\{"level":(\d+)/.exec(line);
  return m ? Number(m[1]) : 30;
}

/** A destination writing `transform(line)` to `inner`, passing flushSync/end/… through (pino calls them on fatal and exit). */
function lineDestination(inner: DestinationStream, transform: (line: string) => string): DestinationStream {
  const out: DestinationStream & Record<string, unknown> = { write: (line: string) => inner.write(transform(line)) };
  const stream = inner as unknown as Record<string, unknown>;
  for (const method of ['flush', 'flushSync', 'end', 'reopen', 'on', 'once', 'off', 'removeListener', 'emit']) {
    const fn = stream[method];
    if (typeof fn === 'function') out[method] = (fn as (...a: unknown[]) => unknown).bind(inner);
  }
  return out;
}

/** A logger that writes nothing: tests and one-shot commands that print their own output. */
export function createSilentLogger(): Logger {
  return pino({ level: 'silent' });
}

/**
 * Every string in a value with URL credentials masked (`rtsp://user:***@cam`, `?password=***`): a deep
 * copy for what leaves the process as JSON (HTTP bodies, log lines). Non-plain objects are kept as they are.
 */
export function maskCredentialsDeep<T>(value: T): T {
  return maskDeep(value, 0) as T;
}

function maskDeep(value: unknown, depth: number): unknown {
  if (typeof value === 'string') return maskUrlCredentials(value);
  if (depth > 64 || typeof value !== 'object' || value === null) return value;
  if (Array.isArray(value)) return value.map((v) => maskDeep(v, depth + 1));
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = maskDeep(v, depth + 1);
  return out;
}

/**
 * A destination that masks credentials in URLs (`user:password@`, `?password=`) in every line, after
 * pino has serialised it: so in the message, in an error's message and stack, in nested objects and in
 * child bindings alike (pino's own redaction only knows fixed paths). createLogger puts it in front of
 * the formatting (pretty, journald priority), so it always sees pino's JSON line.
 */
export function maskingDestination(inner: DestinationStream): DestinationStream {
  return lineDestination(inner, maskLine);
}

/**
 * One serialised JSON line with credentials in URLs masked. A line with neither "@" nor "=" costs two
 * substring searches; one with either, two regular-expression scans; one the mask changes is parsed and
 * each string masked on its own, so the JSON stays valid whatever stands around the secret. Measured on
 * x64: a typical line costs pino ~3.5 µs and the mask ~0.3 µs more; a line holding a secret ~35 µs
 * (rare: an error naming a URL).
 */
export function maskLine(line: string): string {
  // Both patterns need an "@" (user:password@) or an "=" (?password=): most lines have neither.
  if (!line.includes('@') && !line.includes('=')) return line;
  const quick = maskUrlCredentials(line);
  if (quick === line) return line;
  try {
    return `${JSON.stringify(maskCredentialsDeep(JSON.parse(line)))}\n`;
  } catch {
    return quick; // not one JSON line: mask the text as it is
  }
}
