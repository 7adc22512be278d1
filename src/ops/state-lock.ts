// One daemon per state directory: two would interleave writes to the same outbox and seq files.
// A pid file with a liveness check, not a lock that expires: after kill -9 or a power cut the next
// start must not wait for a timeout (systemd restarts us within a second).
//
// A pid alone does not say who holds the lock: the file lives in the persistent state directory, and
// after a power cut its pid often belongs to another process (another user's, or another Node service
// such as Node-RED or Zigbee2MQTT). So the file also records the boot (/proc/sys/kernel/random/boot_id)
// and the process's start time (field 22 of /proc/<pid>/stat, clock ticks since boot): together with
// the pid they name one process for the machine's whole life. The lock is stale when the boot differs,
// the pid is gone, or the pid's start time is not the recorded one.
//
// The lock stays in the state directory, not in the runtime directory: the state directory is what must
// be protected, and outside systemd the runtime directory is the shared OS temp dir (or another
// daemon's), so a lock there would not keep two daemons off one outbox.
import { readFileSync } from 'node:fs';
import { link, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';

export class StateDirLockedError extends Error {
  override name = 'StateDirLockedError';
}

export interface StateLock {
  path: string;
  /** Why an existing lock file was taken over (it was stale), if there was one. */
  tookOver?: string;
  release(): Promise<void>;
}

export interface LockOptions {
  /** Told when a stale lock file is taken over; without one, a line goes to stderr (the journal). */
  logger?: { warn(obj: object, msg: string): void };
}

/** What the lock file holds (one JSON line). `bootId` and `startTime` are absent where /proc is not. */
export interface LockOwner {
  pid: number;
  bootId?: string;
  /** Field 22 of /proc/<pid>/stat: clock ticks after boot at which the process started. */
  startTime?: string;
  /** The owner's uid: a pid that now answers EPERM to a signal belongs to another user. */
  uid?: number;
}

const LOCK_FILE = 'inceptiond.pid';
const BOOT_ID = '/proc/sys/kernel/random/boot_id';

function readText(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** This boot's id, or undefined without /proc. */
export function bootId(): string | undefined {
  return readText(BOOT_ID)?.trim() || undefined;
}

/**
 * Field 22 of /proc/<pid>/stat (start time in clock ticks after boot), or undefined when the process is
 * gone or hidden (no /proc, or ProtectProc=invisible/hidepid for another user's process).
 */
export function processStartTime(pid: number): string | undefined {
  const stat = readText(`/proc/${pid}/stat`);
  if (stat === undefined) return undefined;
  // The command name (field 2) is in parentheses and may hold spaces and ')': count from the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields[22 - 3];
}

/** The owner this process writes into the lock file. */
function self(): LockOwner {
  return { pid: process.pid, bootId: bootId(), startTime: processStartTime(process.pid), uid: process.getuid?.() };
}

/** The lock file's content: the current format (JSON), the old one (a pid alone, `legacy`), or neither. */
export function parseLockFile(text: string): (LockOwner & { legacy?: true }) | undefined {
  const trimmed = text.trim();
  if (/^\d+$/.test(trimmed)) return { pid: Number(trimmed), legacy: true };
  try {
    const v = JSON.parse(trimmed) as Record<string, unknown>;
    if (typeof v !== 'object' || v === null || !Number.isInteger(v.pid) || (v.pid as number) <= 0) return undefined;
    return {
      pid: v.pid as number,
      bootId: typeof v.bootId === 'string' ? v.bootId : undefined,
      startTime: typeof v.startTime === 'string' ? v.startTime : undefined,
      uid: typeof v.uid === 'number' ? v.uid : undefined,
    };
  } catch {
    return undefined;
  }
}

/** 'gone', 'alive' (ours to signal) or 'eperm' (alive, another user's). */
function signalCheck(pid: number): 'gone' | 'alive' | 'eperm' {
  try {
    process.kill(pid, 0);
    return 'alive';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM' ? 'eperm' : 'gone';
  }
}

/**
 * Why the lock described by `text` no longer holds (a reason for the log), or undefined when its owner
 * still runs. The old format (a pid alone, written before boot id and start time were recorded) is
 * judged by the command line: held only while that pid runs something that looks like this daemon.
 */
export function staleReason(text: string): string | undefined {
  const owner = parseLockFile(text);
  if (!owner) return 'the lock file holds no pid';
  const { pid } = owner;
  const signal = signalCheck(pid);
  if (signal === 'gone') return `pid ${pid} is not running`;
  if (owner.legacy) {
    if (pid === process.pid) return `pid ${pid} is this process`;
    const cmdline = readText(`/proc/${pid}/cmdline`)?.replaceAll('\0', ' ');
    if (cmdline !== undefined) {
      return /inceptiond|cli\.js run/.test(cmdline) ? undefined : `pid ${pid} is another program (${cmdline.trim().slice(0, 80)})`;
    }
    // Hidden from us: another user's process. The daemon always runs as one user, so not ours.
    return signal === 'eperm' ? `pid ${pid} belongs to another user` : undefined;
  }
  const boot = bootId();
  if (owner.bootId !== undefined && boot !== undefined && owner.bootId !== boot) return `it was written before a reboot (pid ${pid})`;
  const startTime = processStartTime(pid);
  if (startTime !== undefined && owner.startTime !== undefined) {
    if (startTime !== owner.startTime) return `pid ${pid} is now another process (started at ${startTime}, not ${owner.startTime})`;
    // The very process that wrote it: ours only if it is this process (a second lock in one process).
    return pid === process.pid ? `pid ${pid} is this process` : undefined;
  }
  // The start time cannot be read (no /proc, or the process is hidden from us). A process that answers
  // EPERM runs as another user; if the owner ran as us, the pid was reused.
  const uid = process.getuid?.();
  if (signal === 'eperm' && owner.uid !== undefined && owner.uid === uid) return `pid ${pid} now belongs to another user`;
  return pid === process.pid ? `pid ${pid} is this process` : undefined;
}

/**
 * Takes the state directory for this process, or throws StateDirLockedError naming the pid of the
 * daemon that holds it. A stale lock file (see staleReason) is taken over and the reason logged.
 */
export async function lockStateDir(stateDir: string, options: LockOptions = {}): Promise<StateLock> {
  const file = path.join(stateDir, LOCK_FILE);
  const content = `${JSON.stringify(self())}\n`;
  let tookOver: string | undefined;
  for (let attempt = 0; attempt < 2; attempt++) {
    // Written whole under another name, then linked into place (link fails if the name exists): a
    // concurrent start never reads a half-written file and mistakes it for garbage.
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, content);
    try {
      await link(tmp, file);
      return {
        path: file,
        ...(tookOver === undefined ? {} : { tookOver }),
        async release() {
          // Only remove our own file: a successor may already have replaced a stale one.
          const owner = parseLockFile(await readFile(file, 'utf8').catch(() => ''));
          if (owner?.pid === process.pid && !owner.legacy) await rm(file, { force: true });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    } finally {
      await rm(tmp, { force: true });
    }
    const text = await readFile(file, 'utf8').catch(() => '');
    const reason = staleReason(text);
    if (reason === undefined) {
      const pid = parseLockFile(text)?.pid;
      throw new StateDirLockedError(
        `state directory ${stateDir} is in use by another inceptiond (pid ${pid}); ` +
          `give each daemon its own stateDir (two would corrupt the outbox). If pid ${pid} is not an inceptiond, delete ${file}`,
      );
    }
    tookOver = reason;
    const message = `taking over a stale state-directory lock: ${reason}`;
    if (options.logger) options.logger.warn({ file, reason }, message);
    else process.stderr.write(`inceptiond: ${message} (${file})\n`);
    await rm(file, { force: true }); // left behind by a daemon that died: take it over
  }
  throw new StateDirLockedError(`cannot lock state directory ${stateDir}: ${file} keeps reappearing`);
}
