/**
 * The daemon process and its signals: SIGHUP reloads the configuration file (live keys at once, over
 * the same MQTT connection; an invalid file refused while the daemon runs on), and SIGTERM stops it
 * cleanly even in the middle of a first start that is still building and quantizing its model. And the
 * process settings the unit gives it: jemalloc preloaded, or glibc's malloc where it is missing.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ResultPayload } from '../../src/publish/index.js';
import { collect, requester, startBroker, startProxy, type Collector, type TcpProxy, type TestBroker } from '../helpers/broker.js';
import { projectRoot, startDaemon, writeConfig, type DaemonProcess } from '../helpers/daemon-process.js';
import { sharedModelEnv } from '../global-setup.js';
import { schedulingPolicy } from '../../src/ops/index.js';
import { unitEnvironment, unitSchedulingPolicy } from '../helpers/systemd-unit.js';
import { hasChrt, jemallocPath, SKIP } from '../helpers/tools.js';

let broker: TestBroker;
let work: string;
const daemons: DaemonProcess[] = [];
const cleanups: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  broker = await startBroker();
  work = await mkdtemp(path.join(tmpdir(), 'inceptiond-lifecycle-'));
});
afterEach(async () => {
  await Promise.all(daemons.splice(0).map((d) => d.stop('SIGKILL')));
  for (const c of cleanups.splice(0)) await c();
});
afterAll(async () => {
  await broker?.stop();
  await rm(work, { recursive: true, force: true });
});

function baseConfig(name: string, url: string, topK: number): Record<string, unknown> {
  return {
    deviceId: name,
    stateDir: path.join(work, name, 'state'),
    capture: { backend: 'files', intervalMs: 100, files: { path: path.join(projectRoot, 'models', 'samples'), loop: true } },
    mqtt: { url, baseTopic: `lifecycle/${name}` },
    inference: { topK },
    http: { enabled: false },
    metrics: { intervalSec: 0 },
  };
}

async function watch(topic: string): Promise<Collector> {
  const c = await collect(broker.url, topic);
  cleanups.push(() => c.close());
  return c;
}

describe('daemon signals', () => {
  it('SIGHUP applies a new top-k at once over the same connection, and refuses an invalid file while running on', async () => {
    const proxy: TcpProxy = await startProxy(broker.port);
    cleanups.push(() => proxy.close());
    const file = await writeConfig(path.join(work, 'hup'), baseConfig('hup', proxy.url, 2));
    const sub = await watch('lifecycle/hup/#');
    const labels = 'lifecycle/hup/camera/labels';
    const daemon = startDaemon(['run', '-c', file], sharedModelEnv(inject('modelCacheDir')));
    daemons.push(daemon);
    await sub.waitForCount(2, { filter: (m) => m.topic === labels });
    expect(sub.json<ResultPayload>(labels).every((r) => r.labels.length === 2)).toBe(true);

    await writeFile(file, JSON.stringify(baseConfig('hup', proxy.url, 4)));
    daemon.child.kill('SIGHUP');
    const done = await daemon.waitForLog((l) => l.msg === 'configuration reloaded');
    expect(done.applied).toEqual(['inference.topK']);
    const seen = sub.messages.filter((m) => m.topic === labels).length;
    const next = await sub.waitForCount(seen + 1, { filter: (m) => m.topic === labels });
    expect((JSON.parse(next.at(-1)!.text) as ResultPayload).labels).toHaveLength(4);
    const reloaded = await sub.waitFor((m) => m.topic === 'lifecycle/hup/status' && JSON.parse(m.text).lastReload?.ok === true);
    expect(JSON.parse(reloaded.text).state).toBe('online');

    // An invalid file: refused with the key named, the daemon keeps its configuration and keeps working.
    await writeFile(file, JSON.stringify({ ...baseConfig('hup', proxy.url, 4), inference: { topK: 0 } }));
    daemon.child.kill('SIGHUP');
    const refused = await daemon.waitForLog((l) => String(l.msg).startsWith('reload refused'));
    expect(refused.msg).toMatch(/inference\.topK = 0/);
    const status = await sub.waitFor((m) => m.topic === 'lifecycle/hup/status' && JSON.parse(m.text).lastReload?.ok === false);
    expect(JSON.parse(status.text).lastReload.error).toMatch(/inference\.topK/);
    const count = sub.messages.filter((m) => m.topic === labels).length;
    const still = await sub.waitForCount(count + 2, { filter: (m) => m.topic === labels });
    expect((JSON.parse(still.at(-1)!.text) as ResultPayload).labels).toHaveLength(4);

    expect(daemon.child.exitCode).toBeNull();
    expect(proxy.connections).toBe(1); // neither reload reconnected
    expect(await daemon.stop('SIGTERM')).toBe(0);
  });

  it('SIGTERM during a first start that is still preparing its model exits 0 at once; SIGHUP then does not kill it', async () => {
    // A model cache of its own: the daemon must build and quantize (seconds to minutes).
    const file = await writeConfig(path.join(work, 'early'), {
      ...baseConfig('early', broker.url, 5),
      model: { cacheDir: path.join(work, 'early', 'models') },
    });
    const daemon = startDaemon(['run', '-c', file], { INCEPTIOND_MODEL_CALIBRATION_PATH: path.join(projectRoot, 'models', 'samples') });
    daemons.push(daemon);
    await daemon.waitForLog((l) => /SYNTHETIC|quantizing/.test(String(l.msg)));
    daemon.child.kill('SIGHUP'); // Node's default would end the process; it must not
    await daemon.waitForLog((l) => String(l.msg).startsWith('reload requested before the daemon is running'));
    expect(daemon.child.exitCode).toBeNull();
    const t0 = performance.now();
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);
    expect(performance.now() - t0).toBeLessThan(10_000);
    expect(daemon.logs.map((l) => l.msg)).toContain('stopped before the start completed');
  });

  it('the settings a set request kept apply at the next start, over the file; a broken settings file exits 78 naming it', async () => {
    const dir = path.join(work, 'kept');
    const file = await writeConfig(dir, baseConfig('kept', broker.url, 5));
    const sub = await watch('lifecycle/kept/#');
    const env = sharedModelEnv(inject('modelCacheDir'));
    const first = startDaemon(['run', '-c', file], env);
    daemons.push(first);
    await sub.waitFor((m) => m.topic === 'lifecycle/kept/camera/labels');
    const requests = await requester(broker.url, 'lifecycle/kept');
    cleanups.push(() => requests.close());
    expect(await requests.ask('set', { config: { inference: { topK: 2 } }, persist: true })).toMatchObject({ status: 'ok' });
    expect(await first.stop('SIGTERM')).toBe(0);

    const second = startDaemon(['run', '-c', file], env);
    daemons.push(second);
    await second.waitForLog((l) => String(l.msg).startsWith('applying the settings kept by set requests'));
    const n = sub.messages.filter((m) => m.topic === 'lifecycle/kept/camera/labels').length;
    const later = await sub.waitForCount(n + 1, { filter: (m) => m.topic === 'lifecycle/kept/camera/labels' });
    expect((JSON.parse(later.at(-1)!.text) as ResultPayload).labels).toHaveLength(2);
    expect(await second.stop('SIGTERM')).toBe(0);

    await writeFile(path.join(dir, 'state', 'settings.json'), '{"inference": {"topK": 0}}');
    const third = startDaemon(['run', '-c', file], env);
    daemons.push(third);
    expect(await third.exited).toBe(78);
    const fatal = third.logs.find((l) => l.level === 60);
    expect(String(fatal?.msg)).toMatch(/inference\.topK = 0[\s\S]*settings kept by set requests in .*settings\.json/);
  });
});

/** Starts a daemon, waits for three Results and asks it for `info`. */
async function runUntilResult(
  name: string,
  env: Record<string, string>,
  options: { scheduling?: string } = {},
): Promise<{ daemon: DaemonProcess; info: Record<string, unknown> }> {
  const file = await writeConfig(path.join(work, name), baseConfig(name, broker.url, 5));
  const sub = await watch(`lifecycle/${name}/camera/labels`);
  const daemon = startDaemon(['run', '-c', file], { ...sharedModelEnv(inject('modelCacheDir')), ...env }, options);
  daemons.push(daemon);
  await sub.waitForCount(3);
  const requests = await requester(broker.url, `lifecycle/${name}`);
  cleanups.push(() => requests.close());
  const answer = await requests.ask<{ status: string; data: Record<string, unknown> }>('info');
  expect(answer.status).toBe('ok');
  return { daemon, info: answer.data };
}

describe("the unit's CPU scheduling", () => {
  /** Each thread of a process: its name and scheduling policy. */
  const threadPolicies = (pid: number) =>
    readdirSync(`/proc/${pid}/task`).map((tid) => ({
      thread: readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim(),
      policy: schedulingPolicy(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')),
    }));

  it("started as the unit starts it, every thread runs batch (ONNX Runtime's and libvips' too) and the daemon says so", async (ctx) => {
    ctx.skip(!hasChrt(), SKIP.chrt);
    const policy = unitSchedulingPolicy();
    expect(policy).toBe('batch');
    const env = { ...unitEnvironment(), INCEPTIOND_INFERENCE_THREADS: '2' }; // a pool thread on any machine
    const { daemon, info } = await runUntilResult('batch', env, { scheduling: policy });
    expect(info.scheduling).toBe('batch');
    const running = await daemon.waitForLog((l) => String(l.msg).startsWith('running'));
    expect(running.scheduling).toBe('batch');
    // Threads inherit the policy from the thread that creates them: the inference worker, the pool thread
    // ONNX Runtime starts from it, libvips' worker started from libuv's pool.
    const threads = threadPolicies(daemon.child.pid!);
    expect(threads.filter((t) => t.thread === 'inference').length).toBeGreaterThanOrEqual(2);
    expect(threads.some((t) => t.thread.startsWith('libvips'))).toBe(true);
    expect(threads.filter((t) => t.policy !== 'batch')).toEqual([]);
    expect(await daemon.stop('SIGTERM')).toBe(0);
  });

  it('started from a shell, it runs under the shell’s policy and says which', async () => {
    const { daemon, info } = await runUntilResult('shell-policy', {});
    const own = schedulingPolicy();
    expect(own).toBeDefined();
    expect(info.scheduling).toBe(own);
    expect(new Set(threadPolicies(daemon.child.pid!).map((t) => t.policy))).toEqual(new Set([own]));
    expect(await daemon.stop('SIGTERM')).toBe(0);
  });
});

describe("the unit's memory allocator", () => {
  it('with libjemalloc2 installed, the daemon runs on jemalloc with the unit’s settings and says so', async (ctx) => {
    ctx.skip(!jemallocPath(), SKIP.jemalloc);
    const env = unitEnvironment();
    const { daemon, info } = await runUntilResult('jemalloc', env);
    expect(info.allocator).toBe('jemalloc');
    const running = await daemon.waitForLog((l) => String(l.msg).startsWith('running'));
    expect(running.allocator).toBe(`jemalloc (MALLOC_CONF=${env.MALLOC_CONF})`);
    // Nothing on stderr: neither ld.so nor jemalloc (which prints "Invalid conf pair" for a bad MALLOC_CONF).
    expect(daemon.otherOutput).toEqual([]);
    expect(await daemon.stop('SIGTERM')).toBe(0);
  });

  it('without the library, the daemon runs on glibc with the unit’s fallback settings and warns once', async () => {
    const env: Record<string, string> = { ...unitEnvironment(), LD_PRELOAD: 'libinceptiond-no-such-malloc.so.0' };
    const { daemon, info } = await runUntilResult('no-jemalloc', env);
    expect(info.allocator).toBe('glibc');
    const warning = await daemon.waitForLog((l) => l.level === 40 && String(l.msg).startsWith('LD_PRELOAD names'));
    expect(warning).toMatchObject({ notLoaded: ['libinceptiond-no-such-malloc.so.0'], allocator: 'glibc' });
    expect(String(warning.msg)).toContain('libjemalloc2');
    const running = await daemon.waitForLog((l) => String(l.msg).startsWith('running'));
    expect(running.allocator).toBe(
      `glibc (MALLOC_ARENA_MAX=${env.MALLOC_ARENA_MAX}, MALLOC_MMAP_THRESHOLD_=${env.MALLOC_MMAP_THRESHOLD_})`,
    );
    expect(daemon.logs.filter((l) => String(l.msg).startsWith('LD_PRELOAD names'))).toHaveLength(1);
    expect(await daemon.stop('SIGTERM')).toBe(0);
  });
});
