// One daemon per state directory: two would interleave writes to the same outbox and seq files.
// A pid file with a liveness check, not a lock that expires: after kill -9 or a power cut the next
// start must not wait for a timeout (systemd restarts us within a second).
import { readFileSync } from 'node:fs';
import { open, readFile, rm } from 'node:fs/promises';
import path from 'node:path';

export class StateDirLockedError extends Error {
  override name = 'StateDirLockedError';
}

export interface StateLock {
  path: string;
  release(): Promise<void>;
}

const LOCK_FILE = 'inceptiond.pid';

/** Is `pid` a running process that looks like a Node program (pids are reused after a reboot)? */
function isLiveDaemon(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // alive, owned by someone else
  }
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return /node|inceptiond/.test(cmdline);
  } catch {
    return true; // no /proc (not Linux): trust the signal check
  }
}

export async function lockStateDir(stateDir: string): Promise<StateLock> {
  const file = path.join(stateDir, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(file, 'wx');
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      return {
        path: file,
        async release() {
          // Only remove our own file: a successor may already have replaced a stale one.
          const owner = await readFile(file, 'utf8').catch(() => '');
          if (Number(owner.trim()) === process.pid) await rm(file, { force: true });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = Number((await readFile(file, 'utf8').catch(() => '')).trim());
    if (owner !== process.pid && isLiveDaemon(owner)) {
      throw new StateDirLockedError(
        `state directory ${stateDir} is in use by another inceptiond (pid ${owner}); ` +
          'give each daemon its own stateDir (two would corrupt the outbox)',
      );
    }
    await rm(file, { force: true }); // left behind by a daemon that died: take it over
  }
  throw new StateDirLockedError(`cannot lock state directory ${stateDir}: ${file} keeps reappearing`);
}
