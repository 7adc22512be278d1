import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { lockStateDir, StateDirLockedError } from '../../src/ops/index.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'inceptiond-lock-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A live node process that is not us: the "other daemon". */
function otherNode() {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  const stop = () =>
    new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGKILL');
    });
  return { pid: child.pid!, stop };
}

describe('lockStateDir', () => {
  it('writes our pid and removes the file on release', async () => {
    const lock = await lockStateDir(dir);
    expect((await readFile(lock.path, 'utf8')).trim()).toBe(String(process.pid));
    await lock.release();
    await expect(readFile(lock.path)).rejects.toThrow(/ENOENT/);
  });

  it('refuses a directory held by another live process, naming its pid', async () => {
    const other = otherNode();
    try {
      await writeFile(path.join(dir, 'inceptiond.pid'), `${other.pid}\n`);
      const err = await lockStateDir(dir).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StateDirLockedError);
      expect((err as Error).message).toContain(`pid ${other.pid}`);
    } finally {
      await other.stop();
    }
  });

  it('takes over a lock left by a process that died (kill -9, power cut)', async () => {
    const other = otherNode();
    await other.stop();
    await writeFile(path.join(dir, 'inceptiond.pid'), `${other.pid}\n`);
    const lock = await lockStateDir(dir);
    expect((await readFile(lock.path, 'utf8')).trim()).toBe(String(process.pid));
    await lock.release();
  });

  it("takes over a garbage lock file, and release leaves a successor's file alone", async () => {
    await writeFile(path.join(dir, 'inceptiond.pid'), 'not a pid');
    const lock = await lockStateDir(dir);
    await writeFile(lock.path, '999999999\n'); // a successor took over after us
    await lock.release();
    expect((await readFile(lock.path, 'utf8')).trim()).toBe('999999999');
  });
});
