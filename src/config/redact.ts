import { maskUrlCredentials } from './errors.js';

export const REDACTED = '[redacted]';

// Keys whose value is the secret itself. Paths to secrets (passwordFile, key, ca) are fine to show and
// help debugging; mqtt.key is a path, so plain "key" is not listed.
const SECRET_KEY = /(password|passwd|passphrase|secret|token|apikey|api_key|credentials?)$/i;
const PATH_KEY = /(file|path|dir|directory)$/i;

/**
 * A deep copy safe to print or log: values of secret-named keys replaced, user:password@ in URLs (broker,
 * RTSP cameras) and token-like query parameters masked. The config never holds the password itself
 * (only mqtt.passwordFile), so this guards URLs and keys added later.
 */
export function redactConfig<T>(config: T): T {
  return redactValue(config, undefined) as T;
}

function redactValue(value: unknown, key: string | undefined): unknown {
  if (Array.isArray(value)) return value.map((item) => redactValue(item, undefined));
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = redactValue(v, k);
    return out;
  }
  if (typeof value === 'string') {
    if (key !== undefined && SECRET_KEY.test(key) && !PATH_KEY.test(key) && value !== '') return REDACTED;
    return maskUrlCredentials(value);
  }
  return value;
}

/** The effective configuration as `config print` shows it: redacted, pretty JSON. */
export function configToJSON(config: unknown): string {
  return JSON.stringify(redactConfig(config), null, 2);
}
