import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { lockStateDir, StateDirLockedError } from '../../src/ops/index.js';
import { bootId, processStartTime } from '../../src/ops/state-lock.js';

let dir: string;
const children: Array<() => Promise<void>> = [];
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'inceptiond-lock-'));
});
afterEach(async () => {
  vi.restoreAllMocks();
  for (const stop of children.splice(0)) await stop();
  await rm(dir, { recursive: true, force: true });
});

const lockFile = () => path.join(dir, 'inceptiond.pid');

/**
 * A live node process that is not us. `args` end up in its /proc/<pid>/cmdline, so `['cli.js', 'run']`
 * makes it look like a daemon. Resolves once it runs (its start time is in /proc by then).
 */
async function otherNode(args: string[] = []) {
  const child = spawn(process.execPath, ['-e', 'console.log("up"); setInterval(() => {}, 1000)', ...args], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  await new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.stdout!.once('data', () => resolve());
  });
  let exited = false;
  child.once('exit', () => (exited = true));
  const stop = () =>
    new Promise<void>((resolve) => {
      if (exited) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGKILL');
    });
  children.push(stop);
  return { pid: child.pid!, stop };
}

function logger() {
  const lines: Array<{ obj: object; msg: string }> = [];
  return { lines, warn: (obj: object, msg: string) => lines.push({ obj, msg }) };
}

/** Takeovers are logged; these tests check `tookOver` instead. */
const quiet = { logger: { warn() {} } };

const lockJson = (owner: Record<string, unknown>) => `${JSON.stringify(owner)}\n`;

describe('lockStateDir', () => {
  it('records pid, boot id, start time and uid, and removes the file on release', async () => {
    const lock = await lockStateDir(dir, quiet);
    const owner = JSON.parse(await readFile(lock.path, 'utf8'));
    expect(owner).toEqual({ pid: process.pid, bootId: bootId(), startTime: processStartTime(process.pid), uid: process.getuid!() });
    expect(owner.bootId).toMatch(/^[0-9a-f-]{36}$/);
    expect(owner.startTime).toMatch(/^\d+$/);
    expect(lock.tookOver).toBeUndefined();
    await lock.release();
    await expect(readFile(lock.path)).rejects.toThrow(/ENOENT/);
  });

  it('refuses a directory held by a live daemon (same boot, same start time), naming its pid', async () => {
    const other = await otherNode(['cli.js', 'run']);
    const startTime = processStartTime(other.pid);
    expect(startTime).toMatch(/^\d+$/);
    await writeFile(lockFile(), lockJson({ pid: other.pid, bootId: bootId(), startTime, uid: process.getuid!() }));
    const err = await lockStateDir(dir, quiet).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StateDirLockedError);
    expect((err as Error).message).toContain(`pid ${other.pid}`);
    expect((err as Error).message).toContain(lockFile());
    // Untouched: the holder keeps its lock.
    expect(JSON.parse(await readFile(lockFile(), 'utf8')).pid).toBe(other.pid);
  });

  it('takes over a lock whose pid is now an unrelated Node process (same boot, other start time), with a log line', async () => {
    // After a power cut the recorded pid is often Node-RED's or Zigbee2MQTT's: alive, but not the daemon.
    const other = await otherNode();
    const recorded = String(Number(processStartTime(other.pid)) - 1000);
    await writeFile(lockFile(), lockJson({ pid: other.pid, bootId: bootId(), startTime: recorded, uid: process.getuid!() }));
    const log = logger();
    const lock = await lockStateDir(dir, { logger: log });
    expect(JSON.parse(await readFile(lock.path, 'utf8')).pid).toBe(process.pid);
    expect(lock.tookOver).toMatch(new RegExp(`pid ${other.pid} is now another process`));
    expect(log.lines).toHaveLength(1);
    expect(log.lines[0]!.msg).toMatch(/taking over a stale state-directory lock: pid \d+ is now another process/);
    await lock.release();
  });

  it('takes over a lock written during another boot, even when its pid and start time match a live process', async () => {
    const other = await otherNode(['cli.js', 'run']);
    const owner = { pid: other.pid, bootId: '00000000-0000-4000-8000-000000000000', startTime: processStartTime(other.pid) };
    await writeFile(lockFile(), lockJson(owner));
    const log = logger();
    const lock = await lockStateDir(dir, { logger: log });
    expect(lock.tookOver).toMatch(/before a reboot/);
    expect(log.lines.map((l) => l.msg)).toEqual([expect.stringMatching(/before a reboot/)]);
    await lock.release();
  });

  it('takes over a lock left by a process that died (kill -9)', async () => {
    const other = await otherNode(['cli.js', 'run']);
    const owner = { pid: other.pid, bootId: bootId(), startTime: processStartTime(other.pid) };
    await other.stop();
    await writeFile(lockFile(), lockJson(owner));
    const lock = await lockStateDir(dir, quiet);
    expect(lock.tookOver).toBe(`pid ${other.pid} is not running`);
    await lock.release();
  });

  it('EPERM (another user now has the pid): stale when the start time differs, held when it matches', async () => {
    // Tests may run as root, where signals never fail with EPERM: make them.
    const other = await otherNode(['cli.js', 'run']);
    const real = process.kill.bind(process);
    vi.spyOn(process, 'kill').mockImplementation((pid, sig) => {
      if (pid === other.pid && sig === 0) throw Object.assign(new Error('kill EPERM'), { code: 'EPERM' });
      return real(pid, sig);
    });
    const startTime = processStartTime(other.pid)!;
    await writeFile(lockFile(), lockJson({ pid: other.pid, bootId: bootId(), startTime: `${startTime}9`, uid: 4242 }));
    const lock = await lockStateDir(dir, quiet);
    expect(lock.tookOver).toMatch(/is now another process/);
    await lock.release();

    await writeFile(lockFile(), lockJson({ pid: other.pid, bootId: bootId(), startTime, uid: 4242 }));
    await expect(lockStateDir(dir, quiet)).rejects.toThrow(new RegExp(`in use by another inceptiond \\(pid ${other.pid}\\)`));
  });

  it('EPERM and the process hidden from /proc (ProtectProc=invisible): stale only if the owner ran as our user', async () => {
    const hidden = 4_194_000; // no such process here, so no /proc entry; the mocked signal says "another user's"
    vi.spyOn(process, 'kill').mockImplementation(() => {
      throw Object.assign(new Error('kill EPERM'), { code: 'EPERM' });
    });
    const owner = { pid: hidden, bootId: bootId(), startTime: '123' };
    await writeFile(lockFile(), lockJson({ ...owner, uid: process.getuid!() }));
    const lock = await lockStateDir(dir, quiet);
    expect(lock.tookOver).toMatch(/belongs to another user/);
    await lock.release();
    // Written by another user (root's daemon on the same directory?): cannot tell, so held.
    await writeFile(lockFile(), lockJson({ ...owner, uid: process.getuid!() + 1 }));
    await expect(lockStateDir(dir, quiet)).rejects.toBeInstanceOf(StateDirLockedError);
  });

  it('old format (a pid alone): held while that pid runs an inceptiond, taken over when it runs anything else', async () => {
    const daemonLike = await otherNode(['/opt/inceptiond/dist/cli.js', 'run', '-c', '/etc/inceptiond/config.json']);
    await writeFile(lockFile(), `${daemonLike.pid}\n`);
    const err = await lockStateDir(dir, quiet).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StateDirLockedError);
    expect((err as Error).message).toContain(`pid ${daemonLike.pid}`);

    const unrelated = await otherNode();
    await writeFile(lockFile(), `${unrelated.pid}\n`);
    const log = logger();
    const lock = await lockStateDir(dir, { logger: log });
    expect(lock.tookOver).toMatch(new RegExp(`pid ${unrelated.pid} is another program \\(.*node`));
    expect(log.lines).toHaveLength(1);
    await lock.release();

    await unrelated.stop();
    await writeFile(lockFile(), `${unrelated.pid}\n`);
    expect((await lockStateDir(dir, quiet)).tookOver).toBe(`pid ${unrelated.pid} is not running`);
  });

  it("takes over a garbage lock file, and release leaves a successor's file alone", async () => {
    await writeFile(lockFile(), 'not a pid');
    const lock = await lockStateDir(dir, quiet);
    expect(lock.tookOver).toBe('the lock file holds no pid');
    await writeFile(lock.path, lockJson({ pid: 999999999, bootId: bootId(), startTime: '1' })); // a successor took over after us
    await lock.release();
    expect(JSON.parse(await readFile(lock.path, 'utf8')).pid).toBe(999999999);
  });
});
