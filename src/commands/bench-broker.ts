// The broker `inceptiond bench` publishes to while it runs the pipeline: outside the measured process,
// as on a board whose broker runs elsewhere, so its work is not counted as the pipeline's. Mosquitto
// when installed (`top`: 0.6 % of a core beside the daemon at full rate); otherwise Aedes in a child process.
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEmbeddedBroker } from '../publish/embedded-broker.js';
import type { Logger } from 'pino';

export interface BenchBroker {
  kind: 'mosquitto' | 'aedes';
  url: string;
  /** The broker's process (this one only where the compiled child is absent: tests of the sources). */
  pid: number;
  close(): Promise<void>;
}

export interface BenchBrokerOptions {
  /** The mosquitto binary; null: use Aedes even where Mosquitto is installed. Default: found on PATH or in /usr/sbin. */
  mosquitto?: string | null;
}

const READY_TIMEOUT_MS = 10_000;

/** Debian installs mosquitto in /usr/sbin, which a user's PATH may lack. */
function findMosquitto(): string | undefined {
  for (const dir of [...(process.env.PATH ?? '').split(path.delimiter), '/usr/sbin', '/usr/local/sbin']) {
    if (!dir) continue;
    const candidate = path.join(dir, 'mosquitto');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

export async function startBenchBroker(port: number, logger: Logger, opts: BenchBrokerOptions = {}): Promise<BenchBroker> {
  const url = `mqtt://127.0.0.1:${port}`;
  const mosquitto = opts.mosquitto === undefined ? findMosquitto() : (opts.mosquitto ?? undefined);
  if (mosquitto) {
    // Started as root, mosquitto drops to its own user: the folder and file must be readable by it.
    const dir = await mkdtemp(path.join(os.tmpdir(), 'inceptiond-bench-broker-'));
    const conf = path.join(dir, 'mosquitto.conf');
    await writeFile(conf, `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\n`);
    await chmod(dir, 0o755);
    await chmod(conf, 0o644);
    const child = spawn(mosquitto, ['-c', conf], { stdio: 'ignore' });
    try {
      await untilListening(child, port);
    } catch (err) {
      child.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
    logger.debug({ broker: mosquitto, port }, 'bench: broker started');
    return {
      kind: 'mosquitto',
      url,
      pid: child.pid!,
      close: () => stopChild(child).then(() => rm(dir, { recursive: true, force: true })),
    };
  }
  const childModule = fileURLToPath(new URL('./bench-broker-child.js', import.meta.url));
  if (!existsSync(childModule)) {
    // Running the TypeScript sources (tests): no compiled child, so the broker stays in this process.
    const broker = await startEmbeddedBroker({ host: '127.0.0.1', port, logger });
    if (!broker) throw new Error(`bench: port ${port} is already served by another broker`);
    return { kind: 'aedes', url, pid: process.pid, close: () => broker.close() };
  }
  const child = fork(childModule, [String(port)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('bench: the Aedes broker did not start in time')), READY_TIMEOUT_MS);
    child.once('message', () => {
      clearTimeout(timer);
      resolve();
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`bench: the Aedes broker ended (${signal ?? `exit ${code}`}) before it listened`));
    });
  });
  logger.debug({ port }, 'bench: Aedes broker started in a child process');
  return { kind: 'aedes', url, pid: child.pid!, close: () => stopChild(child) };
}

/** Resolves once something accepts connections on the port; rejects if the child ends first. */
async function untilListening(child: ChildProcess, port: number): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let exited: string | undefined;
  child.once('exit', (code, signal) => (exited = signal ?? `exit ${code}`));
  child.once('error', (err) => (exited = err.message));
  for (;;) {
    if (exited) throw new Error(`bench: mosquitto ended (${exited}) before it listened on port ${port}`);
    if (await accepts(port)) return;
    if (Date.now() > deadline) throw new Error(`bench: mosquitto did not listen on port ${port} within ${READY_TIMEOUT_MS} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  return exited;
}
