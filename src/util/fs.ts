// File checks and digests that several layers need (model setup, the inference worker, model fetch, the
// commands). Only node: modules here: util/ sits below every other folder.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { access, stat } from 'node:fs/promises';

/** sha256 of a file as lowercase hex, read as a stream so a model of hundreds of MB is never held whole. */
export async function fileSha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Whether anything (file, folder, a symlink's target) is at `p`; an unreadable parent counts as absent. */
export async function pathExists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

/** Whether `p` is a regular file (following symlinks). */
export async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

/**
 * Throws unless `file` is a readable regular file, with a message naming it as `what` ("model file",
 * "reference model"), so a command fails with one line instead of an error from deep inside a loader.
 */
export async function requireFile(file: string, what: string): Promise<void> {
  let regular: boolean;
  try {
    regular = (await stat(file)).isFile();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(code === 'ENOENT' ? `${what} not found: ${file}` : `${what} ${file} cannot be read: ${(err as Error).message}`);
  }
  if (!regular) throw new Error(`${what} ${file} is not a file`);
}
