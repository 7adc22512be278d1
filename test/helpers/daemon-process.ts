/**
 * The real daemon as a child process (`node dist/cli.js run -c FILE`), for integration tests: writes
 * the config file, parses the JSON log lines as they come, and lets a test await a log line or the exit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { underSchedulingPolicy } from '../../src/ops/index.js';

export const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const cliPath = path.join(projectRoot, 'dist', 'cli.js');

export interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

export interface DaemonProcess {
  child: ChildProcess;
  logs: LogLine[];
  /** stdout lines that are not JSON, and all of stderr: a daemon should print none. */
  otherOutput: string[];
  /** Resolves with the first log line (past or future) that satisfies the predicate. */
  waitForLog(predicate: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** Resolves with the exit code (or the signal name) once the process has exited. */
  exited: Promise<number | string>;
  /** Sends a signal and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | string>;
}

// Daemons still running when the test process exits are killed, so none outlives a failed test.
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

export async function writeConfig(dir: string, config: unknown): Promise<string> {
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, 'config.json');
  await writeFile(file, `${JSON.stringify(config, null, 2)}\n`);
  return file;
}

/**
 * `scheduling` starts it under that CPU scheduling policy as systemd's `CPUSchedulingPolicy=` would, by
 * chrt(1) (util-linux), which sets it and execs node: the daemon is chrt's process.
 */
export function startDaemon(
  args: string[],
  env: Record<string, string | undefined> = {},
  options: { scheduling?: string } = {},
): DaemonProcess {
  const node = [process.execPath, cliPath, ...args];
  const command = options.scheduling ? underSchedulingPolicy(options.scheduling, node) : node;
  const child = spawn(command[0]!, command.slice(1), {
    cwd: projectRoot,
    env: { ...process.env, NOTIFY_SOCKET: undefined, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return watchDaemon(child);
}

/** Follows a daemon started some other way (e.g. as arm64 under emulation): its log, its exit, its stop. */
export function watchDaemon(child: ChildProcess): DaemonProcess {
  live.add(child);
  const logs: LogLine[] = [];
  const otherOutput: string[] = [];
  const waiters = new Set<() => void>();
  const notify = () => {
    for (const w of [...waiters]) w();
  };
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      logs.push(JSON.parse(line) as LogLine);
    } catch {
      otherOutput.push(line);
    }
    notify();
  });
  createInterface({ input: child.stderr! }).on('line', (line) => {
    otherOutput.push(line);
    notify();
  });
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => {
      live.delete(child);
      resolve(code ?? signal ?? -1);
      notify();
    });
  });
  let exitedNow = false;
  void exited.then(() => (exitedNow = true));

  return {
    child,
    logs,
    otherOutput,
    exited,
    waitForLog(predicate, timeoutMs = 60_000) {
      return new Promise<LogLine>((resolve, reject) => {
        const check = () => {
          const hit = logs.find(predicate);
          if (hit) {
            done();
            resolve(hit);
          } else if (exitedNow) {
            done();
            reject(new Error(`daemon exited before the awaited log line; last lines:\n${tail(logs, otherOutput)}`));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`timed out after ${timeoutMs} ms waiting for a log line; last lines:\n${tail(logs, otherOutput)}`));
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    async stop(signal = 'SIGTERM') {
      if (!exitedNow) child.kill(signal);
      return exited;
    },
  };
}

function tail(logs: LogLine[], other: string[]): string {
  return [...logs.slice(-8).map((l) => JSON.stringify(l)), ...other.slice(-8)].join('\n');
}

/** Runs a one-shot CLI command to its end (the built one, or `options.cliPath`). */
export function runCli(
  args: string[],
  env: Record<string, string | undefined> = {},
  options: { cliPath?: string } = {},
): Promise<{ code: number | string; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [options.cliPath ?? cliPath, ...args], { cwd: projectRoot, env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('close', (code, signal) => resolve({ code: code ?? signal ?? -1, stdout, stderr }));
  });
}
