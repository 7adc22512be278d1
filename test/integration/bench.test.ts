/**
 * `inceptiond bench --json`, briefly: one JSON object on one line with the documented fields, the
 * provider the engine used, and efficiency = pipelineFps / idealFps, the measurements taken in turns. The config's files source names a
 * glob, which the bench once read as a folder (readdir) and crashed on. No timing is asserted.
 * The broker the bench publishes to runs in its own process (Mosquitto, else Aedes in a child): its
 * work had been counted as the pipeline's.
 */
import { spawn } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os, { tmpdir } from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { collect, findMosquitto, freePort } from '../helpers/broker.js';
import { runCli } from '../helpers/daemon-process.js';
import { root } from '../helpers/build.js';
import { hasChrt, jemallocPath, SKIP } from '../helpers/tools.js';
import { which } from '../helpers/which.js';
import { unitSchedulingPolicy } from '../helpers/systemd-unit.js';
import { memoryAllocator, schedulingPolicy } from '../../src/ops/index.js';
import { sharedModelEnv } from '../global-setup.js';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'inceptiond-it-bench-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const p50p99 = { p50: expect.any(Number), p99: expect.any(Number) };

describe('bench --json', () => {
  it('prints one line of JSON with the rates, their ratio and the provider used, on a glob of files', async () => {
    const config = path.join(work, 'bench.json');
    const glob = path.join(root, 'models', 'samples', '0[1-4]-*.jpg');
    await writeFile(config, JSON.stringify({ capture: { backend: 'files', files: { path: glob, loop: true } } }));
    // Two rounds: the pipeline is paused for the ceiling's measurements and resumed, twice.
    const out = await runCli(['bench', '-c', config, '--json', '--seconds', '1', '--rounds', '2'], {
      ...sharedModelEnv(inject('modelCacheDir')),
      INCEPTIOND_STATE_DIR: path.join(work, 'state'),
      INCEPTIOND_CONFIG: undefined,
    });
    expect(out.stderr).not.toMatch(/ENOTDIR|ENOENT|Error:/);
    expect(out.code).toBe(0);
    const lines = out.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const r = JSON.parse(lines[0]!);
    expect(r).toMatchObject({
      model: expect.any(String),
      precision: expect.stringMatching(/^(fp32|int8)$/),
      provider: 'cpu',
      broker: findMosquitto() ? 'mosquitto' : 'aedes',
      threads: expect.any(Number),
      workers: 1,
      sessionFps: expect.any(Number),
      idealFps: expect.any(Number),
      pipelineFps: expect.any(Number),
      efficiency: expect.any(Number),
      cpuMsPerFrame: { inference: expect.any(Number), preprocess: expect.any(Number), pipeline: expect.any(Number) },
      coresBusy: expect.any(Number),
      latencyMs: p50p99,
      eventLoopDelayMs: p50p99,
      rssMb: expect.any(Number),
      images: { source: glob, count: 4, sizes: ['640x480'] },
      rounds: 2,
    });
    for (const key of ['sessionFps', 'idealFps', 'pipelineFps', 'rssMb'] as const) expect(r[key]).toBeGreaterThan(0);
    expect(r.cpuMsPerFrame.inference).toBeGreaterThan(0);
    expect(r.cpuMsPerFrame.preprocess).toBeGreaterThan(0);
    // The pipeline does at least the work of its parts, on at most every core.
    expect(r.cpuMsPerFrame.pipeline).toBeGreaterThan(0);
    // Split by thread role from /proc (10 ms ticks), it adds up to about the process's figure.
    const byThread = r.cpuMsPerFrame.pipelineByThread as Record<'main' | 'inference' | 'other', number>;
    expect(byThread.inference).toBeGreaterThan(0);
    expect(byThread.main).toBeGreaterThan(0);
    const sum = byThread.main + byThread.inference + byThread.other;
    expect(sum).toBeGreaterThan(0.7 * r.cpuMsPerFrame.pipeline);
    expect(sum).toBeLessThan(1.3 * r.cpuMsPerFrame.pipeline);
    expect(r.coresBusy).toBeGreaterThan(0);
    expect(r.coresBusy).toBeLessThanOrEqual(r.cores + 0.1);
    expect(r.efficiency).toBeCloseTo(r.pipelineFps / r.idealFps, 3);
    // Measured as the unit runs the daemon: its policy (chrt) and its preloaded malloc.
    expect(r.process).toEqual({
      scheduling: hasChrt() ? unitSchedulingPolicy() : schedulingPolicy(),
      allocator: jemallocPath() ? 'jemalloc' : 'glibc',
    });
  });
});

const ceilingArgs = [
  'bench',
  '--ceiling-only',
  '--json',
  '--seconds',
  '1',
  '--rounds',
  '2',
  '--images',
  path.join(root, 'models', 'samples'),
];
const benchEnv = () => ({
  ...sharedModelEnv(inject('modelCacheDir')),
  INCEPTIOND_STATE_DIR: path.join(work, 'state'),
  INCEPTIOND_CONFIG: undefined,
});

describe('bench --ceiling-only --json', () => {
  it('prints the ceiling alone: the session loop and the preprocessing, no pipeline and no broker', async () => {
    const out = await runCli([...ceilingArgs, '--no-unit-settings'], benchEnv());
    expect(out.code).toBe(0);
    const lines = out.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const r = JSON.parse(lines[0]!);
    expect(r).toMatchObject({ provider: 'cpu', rounds: 2, seconds: 1, images: { sizes: ['640x480'] } });
    expect(r.cpuMsPerFrame.inference).toBeGreaterThan(0);
    expect(r.cpuMsPerFrame.preprocess).toBeGreaterThan(0);
    expect(r.idealFps).toBeCloseTo((r.cores * 1000) / (r.cpuMsPerFrame.inference + r.cpuMsPerFrame.preprocess), 0);
    for (const key of ['pipelineFps', 'efficiency', 'broker', 'rssMb']) expect(r).not.toHaveProperty(key);
    // --no-unit-settings: in the process as started, which has this test's policy and malloc.
    expect(r.process).toEqual({ scheduling: schedulingPolicy(), allocator: memoryAllocator().name });
  });
});

describe("bench under the unit's process settings", () => {
  it('falls back to the policy it was started with, and says so, where chrt is refused; the environment still applies', async (ctx) => {
    ctx.skip(!unitSchedulingPolicy(), 'the unit sets no CPUSchedulingPolicy=');
    // A chrt that fails as in a container whose seccomp profile refuses sched_setscheduler.
    const bin = path.join(work, 'refusing-chrt');
    await mkdir(bin, { recursive: true });
    await writeFile(
      path.join(bin, 'chrt'),
      '#!/bin/sh\necho "chrt: failed to set pid 0\'s policy: Operation not permitted" >&2\nexit 1\n',
      { mode: 0o755 },
    );
    const out = await runCli(ceilingArgs, { ...benchEnv(), PATH: `${bin}:${process.env.PATH}` });
    expect(out.code).toBe(0);
    expect(out.stderr).toContain(
      `chrt --${unitSchedulingPolicy()} is not available here: measuring under the ${schedulingPolicy()} CPU scheduling policy`,
    );
    const r = JSON.parse(out.stdout.trim());
    expect(r.process).toEqual({ scheduling: schedulingPolicy(), allocator: jemallocPath() ? 'jemalloc' : 'glibc' });
  });

  it('measures as started where no unit ships beside the program (the container image sets the same itself)', async () => {
    // The image's layout: dist, config, models and the dependencies, no systemd/.
    const image = path.join(work, 'image');
    await mkdir(image, { recursive: true });
    await cp(path.join(root, 'dist'), path.join(image, 'dist'), { recursive: true });
    await cp(path.join(root, 'package.json'), path.join(image, 'package.json'));
    for (const dir of ['node_modules', 'models', 'config']) await symlink(path.join(root, dir), path.join(image, dir));
    const out = await runCli(ceilingArgs, benchEnv(), { cliPath: path.join(image, 'dist', 'cli.js') });
    expect(out.stderr).toBe('');
    expect(out.code).toBe(0);
    expect(JSON.parse(out.stdout.trim()).process).toEqual({ scheduling: schedulingPolicy(), allocator: memoryAllocator().name });
  });

  it('handles a stop that comes while it probes chrt: it ends with the child it then starts', async (ctx) => {
    ctx.skip(!hasChrt() || !unitSchedulingPolicy(), SKIP.chrt);
    // A chrt that takes a second before it does its work: the stop lands while the parent waits on the probe.
    const bin = path.join(work, 'slow-chrt');
    await mkdir(bin, { recursive: true });
    await writeFile(path.join(bin, 'chrt'), `#!/bin/sh\nsleep 1\nexec ${which('chrt')} "$@"\n`, { mode: 0o755 });
    const bench = spawn(process.execPath, [path.join(root, 'dist', 'cli.js'), 'bench', '--ceiling-only', '--json', '--seconds', '600'], {
      cwd: root,
      env: { ...process.env, ...benchEnv(), PATH: `${bin}:${process.env.PATH}` },
      stdio: 'ignore',
    });
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
      bench.once('exit', (code, signal) => resolve([code, signal])),
    );
    await vi.waitFor(
      async () => {
        const [pid] = (await readFile(`/proc/${bench.pid}/task/${bench.pid}/children`, 'utf8')).trim().split(' ');
        // The probe: the stub (a shell) running `chrt --<policy> 0 true`.
        expect((await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0')).toEqual(
          expect.arrayContaining([path.join(bin, 'chrt'), 'true']),
        );
      },
      { timeout: 20_000, interval: 20 },
    );
    bench.kill('SIGTERM');
    expect(await exited).toEqual([128 + os.constants.signals.SIGTERM, null]);
  });

  it('ends its measuring child when it is stopped', async () => {
    const bench = spawn(
      process.execPath,
      [path.join(root, 'dist', 'cli.js'), 'bench', '--json', '--seconds', '600', '--images', path.join(root, 'models', 'samples')],
      {
        cwd: root,
        env: { ...process.env, ...benchEnv() },
        stdio: 'ignore',
      },
    );
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
      bench.once('exit', (code, signal) => resolve([code, signal])),
    );
    // The measuring child, once the parent has spawned it (/proc/PID/task/*/children, Linux): the bench
    // again with --no-unit-settings (chrt execs it in place), not chrt's probe that comes before it.
    const childPid = await vi.waitFor(
      async () => {
        const pids = (await readFile(`/proc/${bench.pid}/task/${bench.pid}/children`, 'utf8')).trim().split(' ').filter(Boolean);
        expect(pids).toHaveLength(1);
        const cmdline = await readFile(`/proc/${pids[0]}/cmdline`, 'utf8');
        expect(cmdline.split('\0')).toEqual(expect.arrayContaining([process.execPath, 'bench', '--no-unit-settings']));
        return Number(pids[0]);
      },
      { timeout: 20_000, interval: 50 },
    );
    bench.kill('SIGTERM');
    const [code, signal] = await exited;
    // The child died of the forwarded SIGTERM, and the parent said so in its exit code.
    expect([code, signal]).toEqual([128 + os.constants.signals.SIGTERM, null]);
    expect(() => process.kill(childPid, 0)).toThrow(/ESRCH/);
  });
});

describe('the bench broker', () => {
  // The compiled module: only there does the Aedes broker get its own process (bench-broker-child.js).
  const load = async () =>
    (await import(path.join(root, 'dist', 'commands', 'bench-broker.js'))) as typeof import('../../src/commands/bench-broker.js');
  const logger = pino({ level: 'silent' });

  async function roundTrip(url: string): Promise<string> {
    const sub = await collect(url, 'bench-broker/#');
    const client = await mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0 });
    await client.publishAsync('bench-broker/x', 'hello', { qos: 1 });
    await client.endAsync();
    const [m] = await sub.waitForCount(1);
    await sub.close();
    return m!.text;
  }

  // Aedes is asked for explicitly (mosquitto: null), so it is tested where Mosquitto is installed too.
  for (const kind of ['aedes', 'mosquitto'] as const) {
    it(`runs ${kind} in a process of its own that carries messages and ends on close`, async (ctx) => {
      ctx.skip(kind === 'mosquitto' && !findMosquitto(), SKIP.benchMosquitto);
      const { startBenchBroker } = await load();
      const broker = await startBenchBroker(await freePort(), logger, kind === 'aedes' ? { mosquitto: null } : {});
      try {
        expect(broker.kind).toBe(kind);
        expect(broker.pid).not.toBe(process.pid);
        expect(await roundTrip(broker.url)).toBe('hello');
      } finally {
        await broker.close();
      }
      expect(() => process.kill(broker.pid, 0)).toThrow(/ESRCH/);
    });
  }

  it('says so when the broker program ends before it listens', async () => {
    const { startBenchBroker } = await load();
    await expect(startBenchBroker(await freePort(), logger, { mosquitto: '/bin/false' })).rejects.toThrow(
      /mosquitto ended \(exit 1\) before it listened on port \d+/,
    );
  });
});
