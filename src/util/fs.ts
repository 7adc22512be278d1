// File checks and digests that several layers need (model setup, the inference worker, model fetch, the
// commands). Only node: modules here: util/ sits below every other folder.
import { createHash } from 'node:crypto';
import { access, mkdir, open, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';

/**
 * sha256 of a file as lowercase hex, read in pieces so a model of hundreds of MB is never held whole.
 * One buffer is reused: a read stream's 64 KiB chunks stay resident until V8 happens to collect them,
 * which after hashing a 45 MB model at start was ~10 MB of RSS for the first seconds.
 */
export async function fileSha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  const buffer = Buffer.allocUnsafeSlow(1 << 20);
  const handle = await open(file, 'r');
  try {
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
    }
  } finally {
    await handle.close();
  }
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

/**
 * Replaces a file atomically and durably: written to a hidden temp file in the same directory
 * (`.<name>.<pid>.<ms>.tmp`, which model setup sweeps when its writer is gone), fsynced, renamed over
 * the file, then the directory fsynced, so neither a crash nor a power cut leaves half a file or loses
 * the rename. `mode` applies to a new file (e.g. 0o600 for settings that may hold secrets).
 */
export async function writeFileAtomic(filePath: string, data: Uint8Array | string, options: { mode?: number } = {}): Promise<void> {
  const dir = path.dirname(path.resolve(filePath));
  await mkdir(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(filePath)}.${process.pid}.${Date.now()}.tmp`);
  const fh = await open(tmp, 'w', options.mode ?? 0o666);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  try {
    await rename(tmp, filePath);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
