// What every command registration uses: the -c option, the config loader, the one-shot logger, the
// option parsers and UsageError. Cheap to import (commander, config/, ops/): `--help` and `config check` stay fast.
import { Option, type Command } from 'commander';
import type { Logger } from 'pino';
import { LOG_FORMATS, loadConfig, type Config, type LogFormat } from '../config/index.js';
import { createLogger } from '../ops/index.js';

/** An error whose message is the whole story for the user: printed without a stack, exit 2. */
export class UsageError extends Error {}

/** Passed to every `register`: how a command gets its configuration and its logger. */
export interface CommandContext {
  /** The configuration file of -c (or INCEPTIOND_CONFIG) over the defaults and the environment; throws ConfigError when invalid. */
  loadConfig(file: string | undefined, overlay?: Record<string, unknown>): Config;
  /**
   * Logger for one-shot commands: warnings and errors only (or `level`), on stderr, so stdout carries
   * nothing but the command's data (`classify --json | jq` must not meet a log line between two results).
   * Its format is `format`, else log.format of the configuration loaded last, else INCEPTIOND_LOG_FORMAT,
   * else auto (readable lines when stderr is a terminal).
   */
  commandLogger(level?: string, format?: LogFormat): Logger;
  /**
   * The loader's warnings since the last call (deprecated environment names and the like), for the
   * command to log once it has its logger; commandLogger logs them itself.
   */
  takeConfigWarnings(): string[];
  /** A fresh -c/--config option (commander needs one Option object per command). */
  configOption(): Option;
}

/** Adds one command (with its subcommands, options and action) to the program. */
export type RegisterCommand = (program: Command, ctx: CommandContext) => void;

export function createCommandContext(env: NodeJS.ProcessEnv = process.env): CommandContext {
  // Most commands load their configuration before they ask for a logger; the ones that log first fall
  // back to the environment variable.
  let loadedFormat: LogFormat | undefined;
  let warnings: string[] = [];
  const takeConfigWarnings = () => {
    const taken = warnings;
    warnings = [];
    return taken;
  };
  const envFormat = (LOG_FORMATS as readonly string[]).includes(env.INCEPTIOND_LOG_FORMAT ?? '')
    ? (env.INCEPTIOND_LOG_FORMAT as LogFormat)
    : undefined;
  return {
    loadConfig: (file, overlay) => {
      const loaded = loadConfig({ file, env, overlay });
      loadedFormat = loaded.config.log.format;
      warnings.push(...loaded.warnings);
      return loaded.config;
    },
    commandLogger: (level = 'warn', format?: LogFormat) => {
      const logger = createLogger({ level, name: 'inceptiond', fd: 2, format: format ?? loadedFormat ?? envFormat ?? 'auto', env });
      for (const warning of takeConfigWarnings()) logger.warn(warning);
      return logger;
    },
    takeConfigWarnings,
    configOption: () => new Option('-c, --config <file>', 'configuration file (YAML or JSON); also INCEPTIOND_CONFIG'),
  };
}

export function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`expected a positive integer, got "${value}"`);
  return n;
}

export function parseNonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`expected a non-negative integer, got "${value}"`);
  return n;
}

export function parseDecibels(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new UsageError(`expected a number of dB, got "${value}"`);
  return n;
}

export function parsePositiveRatio(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !(n > 0 && Number.isFinite(n))) throw new UsageError(`expected a ratio > 0, got "${value}"`);
  return n;
}

export function parsePercentile(value: string): number {
  const n = Number(value);
  if (!(n > 0 && n <= 100)) throw new UsageError(`--percentile must be a number in (0, 100], got "${value}"`);
  return n;
}
