// Environment variables: each key's name separates its words (INCEPTIOND_CAPTURE_WEBCAM_TIMEOUT_MS); the
// names used before, with the words run together (INCEPTIOND_CAPTURE_WEBCAM_TIMEOUTMS), are still read as
// deprecated aliases, with a warning naming the new name. When both are set, the new name wins.
import { schemaKeys, type SchemaNode } from './schema.js';

export interface EnvSetting {
  /** The variable the value was read from: the key's name, or its deprecated alias. */
  variable: string;
  /** Set when `variable` is a deprecated alias: the key's name, to use instead. */
  replacement?: string;
}

export interface ResolvedEnv {
  /** `env` with each alias's value under the key's name (what convict reads). */
  env: NodeJS.ProcessEnv;
  /** Dotted key → the variable that set it. */
  set: Map<string, EnvSetting>;
  /** One per deprecated alias in use (and per alias ignored because both names are set). */
  warnings: string[];
}

/** Reads the schema's variables from `env`, aliases included. `env` is not changed. */
export function resolveEnv(schema: SchemaNode, env: NodeJS.ProcessEnv): ResolvedEnv {
  const effective: NodeJS.ProcessEnv = { ...env };
  const set = new Map<string, EnvSetting>();
  const warnings: string[] = [];
  for (const { key, env: name, legacyEnv } of schemaKeys(schema)) {
    if (name === undefined) continue;
    const hasName = env[name] !== undefined;
    const hasAlias = legacyEnv !== undefined && env[legacyEnv] !== undefined;
    if (hasName) {
      set.set(key, { variable: name });
      if (hasAlias) {
        warnings.push(
          `${name} and its deprecated alias ${legacyEnv} are both set: ${name} wins and ${legacyEnv} is ignored (unset ${legacyEnv})`,
        );
      }
    } else if (hasAlias) {
      effective[name] = env[legacyEnv];
      set.set(key, { variable: legacyEnv, replacement: name });
      warnings.push(`${legacyEnv} is deprecated: rename it to ${name} (${key}); the old name will stop working in a later release`);
    }
  }
  return { env: effective, set, warnings };
}

/**
 * `report` called once per distinct message: a daemon reloading its configuration a hundred times warns
 * about a deprecated name once. Remembered per `report` function, so each caller sees each warning once.
 */
const reported = new WeakMap<(message: string) => void, Set<string>>();

export function reportOnce(report: (message: string) => void, messages: readonly string[]): void {
  let seen = reported.get(report);
  if (seen === undefined) {
    seen = new Set();
    reported.set(report, seen);
  }
  for (const message of messages) {
    if (seen.has(message)) continue;
    seen.add(message);
    report(message);
  }
}
