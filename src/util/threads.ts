/**
 * CPU time by thread role, read from /proc on Linux (docs/ARCHITECTURE.md, "Threads"), for the metrics:
 * - `main`: the event loop (capture, the tensor's normalisation, Results, the outbox, MQTT, HTTP);
 * - `inference`: the inference worker and the threads ONNX Runtime starts from it. The worker names its
 *   thread `inference` before it loads ORT, and a Linux thread inherits its creator's name, so ORT's
 *   intra-op pool (and an execution provider's own threads) carry the name without being looked for;
 * - `other`: sharp's decoding and resizing (on libuv's pool and libvips' workers), file and socket I/O on
 *   libuv's pool, V8's helper threads (garbage collection, compilation).
 * Node 20 has no per-thread CPU clock (process.threadCpuUsage came in Node 23.9), and /proc gives each
 * thread's user + system time, in clock ticks, at /proc/self/task/<tid>/stat.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';

export type ThreadRole = 'main' | 'inference' | 'other';
export const THREAD_ROLES: readonly ThreadRole[] = ['main', 'inference', 'other'];

/** One value per thread role, in the order of THREAD_ROLES. */
export function byThreadRole<T>(value: (role: ThreadRole) => T): Record<ThreadRole, T> {
  return { main: value('main'), inference: value('inference'), other: value('other') };
}

/** The name the inference worker gives its thread (and so the threads it starts). */
export const INFERENCE_THREAD_NAME = 'inference';

/**
 * Linux reports thread times in USER_HZ ticks, which is 100 on every architecture the daemon runs on
 * (`getconf CLK_TCK`; the kernel's HZ may differ, the /proc ABI does not).
 */
const TICKS_PER_SECOND = 100;

/**
 * Names the calling thread (at most 15 bytes: the kernel's limit), so `top -H` and `ps -L` show it and
 * the threads it starts afterwards inherit the name. False where /proc is absent (not Linux).
 */
export function nameCurrentThread(name: string): boolean {
  try {
    // A synchronous write runs on this thread, which is what /proc/thread-self resolves to.
    writeFileSync('/proc/thread-self/comm', name.slice(0, 15));
    return true;
  } catch {
    return false;
  }
}

export interface ThreadTimes {
  tid: number;
  name: string;
  /** user + system time, in clock ticks */
  ticks: number;
}

/**
 * One /proc/<pid>/task/<tid>/stat line. The name is field 2, in parentheses, and may itself hold
 * spaces and parentheses, so the fields after it are counted from the last ')': utime and stime are
 * fields 14 and 15 of the line.
 */
export function parseThreadStat(tid: number, line: string): ThreadTimes | undefined {
  const open = line.indexOf('(');
  const close = line.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  const rest = line.slice(close + 2).split(' ');
  // rest[0] is field 3 (state), so field n is rest[n - 3].
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
  return { tid, name: line.slice(open + 1, close), ticks: utime + stime };
}

/** This process's threads now; undefined without /proc. A thread that exits while being read is left out. */
export function readThreadTimes(taskDir = '/proc/self/task'): ThreadTimes[] | undefined {
  let tids: string[];
  try {
    tids = readdirSync(taskDir);
  } catch {
    return undefined;
  }
  const threads: ThreadTimes[] = [];
  for (const tid of tids) {
    try {
      const parsed = parseThreadStat(Number(tid), readFileSync(`${taskDir}/${tid}/stat`, 'latin1'));
      if (parsed) threads.push(parsed);
    } catch {
      // gone between the listing and the read
    }
  }
  return threads;
}

/**
 * CPU seconds by role since the meter was made, never decreasing: each reading adds each thread's
 * increase since the previous one, so a thread that exits (a restarted worker, libvips' idle workers)
 * keeps what it was seen to use, and a thread id the kernel reuses starts from zero.
 */
export class ThreadCpuMeter {
  private readonly seen = new Map<number, number>();
  private readonly totals: Record<ThreadRole, number> = { main: 0, inference: 0, other: 0 };

  constructor(
    private readonly read: () => ThreadTimes[] | undefined = () => readThreadTimes(),
    private readonly mainTid: number = process.pid,
  ) {}

  /** Seconds per role; undefined where threads cannot be read. */
  sample(): Record<ThreadRole, number> | undefined {
    const threads = this.read();
    if (!threads) return undefined;
    const alive = new Set<number>();
    for (const { tid, name, ticks } of threads) {
      alive.add(tid);
      const before = this.seen.get(tid) ?? 0;
      this.seen.set(tid, ticks);
      const role: ThreadRole = tid === this.mainTid ? 'main' : name === INFERENCE_THREAD_NAME ? 'inference' : 'other';
      this.totals[role] += ticks >= before ? ticks - before : ticks;
    }
    for (const tid of this.seen.keys()) if (!alive.has(tid)) this.seen.delete(tid);
    return byThreadRole((role) => this.totals[role] / TICKS_PER_SECOND);
  }
}
