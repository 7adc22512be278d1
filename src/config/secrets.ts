import { readFile } from 'node:fs/promises';
import { ConfigError } from './errors.js';

/**
 * Reads a secret from a file (mqtt.passwordFile, a systemd credential). Removes one trailing newline,
 * which editors and `echo` add, and nothing else: spaces may be part of a password. The secret never
 * appears in the error; the key and path do.
 */
export async function readSecretFile(file: string, key = 'secret file'): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new ConfigError(
      { key, value: file, reason: `cannot read: ${code}`, message: `cannot read ${key} ${file}: ${code}` },
      { cause: err },
    );
  }
  const secret = text.replace(/\r?\n$/, '');
  if (secret === '') {
    throw new ConfigError({ key, value: file, reason: 'is empty', message: `${key} ${file} is empty` });
  }
  return secret;
}
