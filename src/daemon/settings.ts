/**
 * The values `set` requests asked to keep (`"persist": true`): <stateDir>/settings.json, the same
 * nested keys as the configuration file, read at start over the file (the environment still wins).
 * Written atomically (temp file, fsync, rename), so a power cut leaves the old or the new file.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError } from '../config/index.js';
import { writeFileAtomic } from '../util/index.js';

export const SETTINGS_FILE = 'settings.json';

/** The kept settings, or undefined when there are none. Throws ConfigError (exit 78) for a file that is not a JSON object. */
export async function readSettings(stateDir: string): Promise<Record<string, unknown> | undefined> {
  const file = path.join(stateDir, SETTINGS_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw settingsError(file, `not valid JSON (${(err as Error).message})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw settingsError(file, 'must hold a JSON object');
  }
  return parsed as Record<string, unknown>;
}

export async function writeSettings(stateDir: string, settings: Record<string, unknown>): Promise<void> {
  const file = path.join(stateDir, SETTINGS_FILE);
  await writeFileAtomic(file, `${JSON.stringify(settings, null, 2)}\n`, { mode: 0o600 });
}

function settingsError(file: string, reason: string): ConfigError {
  return new ConfigError({ reason, message: `settings kept by set requests, ${file}: ${reason}; fix or delete the file` });
}
