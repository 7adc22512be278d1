import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/**
 * The CPU scheduling policy a process or thread runs under, by the names systemd's
 * `CPUSchedulingPolicy=` and chrt(1) use. The unit and the container image start the daemon as `batch`:
 * a woken thread then waits for the running one's time slice instead of preempting it, which stops ONNX
 * Runtime's pool thread (woken for every operator) from preempting the thread that is decoding the next
 * frame and the thread waiting for it (docs/ARCHITECTURE.md, "Threads"). Threads inherit the policy of
 * the thread that creates them, so the whole daemon runs under the one it was started with.
 */
export type SchedulingPolicy = 'other' | 'fifo' | 'rr' | 'batch' | 'idle' | 'deadline';

const POLICIES: Record<number, SchedulingPolicy> = { 0: 'other', 1: 'fifo', 2: 'rr', 3: 'batch', 5: 'idle', 6: 'deadline' };

/**
 * The policy in a /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat line (this process's when not given);
 * undefined where there is none (not Linux).
 */
export function schedulingPolicy(stat: string | null = readOwnStat()): SchedulingPolicy | undefined {
  if (!stat) return undefined;
  // The command name (field 2) is in parentheses and may hold spaces and parentheses: fields are
  // counted from the last ')'. The policy is field 41, the 39th after the name.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return POLICIES[Number(fields[38])];
}

function readOwnStat(): string | null {
  try {
    return readFileSync('/proc/self/stat', 'utf8');
  } catch {
    return null;
  }
}

/**
 * `command` started under `policy` as systemd's `CPUSchedulingPolicy=` starts the daemon: by chrt(1)
 * (util-linux), which sets the policy and execs the command, so the command keeps chrt's process.
 */
export function underSchedulingPolicy(policy: string, command: readonly string[]): string[] {
  return ['chrt', `--${policy}`, '0', ...command];
}

/** Whether chrt can start a process under `policy` here: absent without util-linux, refused under some seccomp profiles. */
export function canStartUnder(policy: string): boolean {
  return process.platform === 'linux' && spawnSync('chrt', [`--${policy}`, '0', 'true'], { stdio: 'ignore' }).status === 0;
}
