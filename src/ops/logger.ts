import os from 'node:os';
import { pino, type DestinationStream, type Logger } from 'pino';
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
  /** Where JSON lines go; default: fd 1 (stdout, i.e. the journal under systemd). */
  destination?: DestinationStream;
}

/**
 * JSON lines with ISO timestamps, pid, hostname and version. The default destination writes
 * synchronously: at our volume (a few lines a minute at info) the cost is nil, and a `fatal` logged
 * right before process.exit() — or before systemd's watchdog SIGABRT — is never lost in a buffer.
 */
export function createLogger(options: LoggerOptions): Logger {
  const destination = options.destination ?? pino.destination({ dest: 1, sync: true });
  return pino(
    {
      level: options.level,
      ...(options.name === undefined ? {} : { name: options.name }),
      base: { pid: process.pid, hostname: os.hostname(), version: packageVersion },
      timestamp: pino.stdTimeFunctions.isoTime,
      serializers: { err: pino.stdSerializers.err, error: pino.stdSerializers.err },
      redact: { paths: [...REDACT_PATHS], censor: '[redacted]' },
    },
    destination,
  );
}

/** A logger that writes nothing: tests and one-shot commands that print their own output. */
export function createSilentLogger(): Logger {
  return pino({ level: 'silent' });
}
