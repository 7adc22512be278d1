/**
 * The daemon in-process, with a fake model, engine and sources but a real broker, outbox and MQTT
 * client: reload, health and the watchdog, a cancelled start, a clean stop.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import sharp from 'sharp';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadConfig, type Config } from '../../src/config/index.js';
import { Daemon, StartCancelledError, type DaemonOptions } from '../../src/daemon/index.js';
import type { ResultPayload } from '../../src/publish/index.js';
import { collect, startBroker, startProxy, type Collector, type TcpProxy, type TestBroker } from '../helpers/broker.js';
import { fakeCamera, fakeEngine, fakeModel } from '../helpers/fake-daemon.js';
import { loadUnixDgram, SKIP } from '../helpers/tools.js';

const logger = pino({ level: 'silent' });
let broker: TestBroker;
let work: string;
let jpeg: Buffer;
const cleanups: Array<() => Promise<unknown> | unknown> = [];

beforeAll(async () => {
  broker = await startBroker();
  work = await mkdtemp(path.join(tmpdir(), 'daemon-lifecycle-'));
  jpeg = await sharp({ create: { width: 16, height: 16, channels: 3, background: '#208040' } })
    .jpeg()
    .toBuffer();
});
afterAll(async () => {
  await broker?.stop();
  await rm(work, { recursive: true, force: true });
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const model = fakeModel;
const camera = (id: string) => fakeCamera(id, () => jpeg);
const engine = fakeEngine;

function config(name: string, url: string, over: Record<string, string> = {}): Config {
  return loadConfig({
    env: {
      INCEPTIOND_STATE_DIR: path.join(work, name),
      INCEPTIOND_DEVICE_ID: name,
      INCEPTIOND_MQTT_URL: url,
      INCEPTIOND_MQTT_BASE_TOPIC: `lc/${name}`,
      INCEPTIOND_CAPTURE_BACKEND: 'files',
      INCEPTIOND_CAPTURE_FILES_PATH: work,
      INCEPTIOND_CAPTURE_INTERVAL_MS: '20',
      INCEPTIOND_HTTP_ENABLED: 'false',
      INCEPTIOND_METRICS_INTERVAL_SEC: '0',
      ...over,
    },
  }).config;
}

async function start(cfg: Config, eng = engine(), extra: DaemonOptions = {}): Promise<Daemon> {
  const daemon = await Daemon.start(cfg, logger, {
    ...extra,
    overrides: { prepareModel: async () => model, createEngine: async () => eng, createSource: (s) => camera(s.id), ...extra.overrides },
  });
  cleanups.push(() => daemon.stop('test done'));
  return daemon;
}

async function watch(topic: string): Promise<Collector> {
  const c = await collect(broker.url, topic);
  cleanups.push(() => c.close());
  return c;
}

describe('Daemon lifecycle', () => {
  it('reload changes top-k at once over the same MQTT connection and names what needs a restart', async () => {
    const proxy: TcpProxy = await startProxy(broker.port);
    cleanups.push(() => proxy.close());
    const cfg = config('reload', proxy.url, { INCEPTIOND_INFERENCE_TOP_K: '2' });
    const sub = await watch('lc/reload/#');
    const daemon = await start(cfg);
    const labels = 'lc/reload/camera/labels';
    await sub.waitForCount(2, { filter: (m) => m.topic === labels });
    expect(sub.json<ResultPayload>(labels)[0]!.labels.length).toBe(2);

    const next = config('reload', proxy.url, { INCEPTIOND_INFERENCE_TOP_K: '4', INCEPTIOND_INFERENCE_THREADS: '1' });
    const report = await daemon.reload(next);
    expect(report.applied).toContain('inference.topK');
    expect(report.restartNeeded).toEqual(['inference.threads']);
    const after = sub.messages.filter((m) => m.topic === labels).length;
    const later = await sub.waitForCount(after + 2, { filter: (m) => m.topic === labels });
    expect((JSON.parse(later.at(-1)!.text) as ResultPayload).labels).toHaveLength(4);
    // The status names the key that waits for a restart.
    const status = await sub.waitFor((m) => m.topic === 'lc/reload/status' && (JSON.parse(m.text).restartNeeded ?? []).length > 0);
    expect(JSON.parse(status.text).restartNeeded).toEqual(['inference.threads']);
    // The live change did not reconnect.
    expect(proxy.connections).toBe(1);
  });

  it('reload adds and removes sources; their seq and status follow', async () => {
    const cfg = config('sources', broker.url);
    const sub = await watch('lc/sources/#');
    const daemon = await start(cfg);
    await sub.waitForCount(1, { filter: (m) => m.topic === 'lc/sources/camera/labels' });
    const next = config('sources', broker.url, {
      INCEPTIOND_SOURCES: JSON.stringify([{ id: 'door', backend: 'files', files: { path: work } }]),
    });
    const report = await daemon.reload(next);
    expect(report.sources).toEqual({ added: ['door'], removed: ['camera'], restarted: [] });
    await sub.waitForCount(1, { filter: (m) => m.topic === 'lc/sources/door/labels' });
    const status = await sub.waitFor((m) => m.topic === 'lc/sources/status' && 'door' in (JSON.parse(m.text).sources ?? {}));
    expect(Object.keys(JSON.parse(status.text).sources)).toEqual(['door']);
  });

  it('a hung inference makes the health check fail with the reason and stops the watchdog pings', async (ctx) => {
    const dgram = loadUnixDgram<{
      createSocket(t: 'unix_dgram'): { bind(p: string): void; on(e: 'message', cb: (b: Buffer) => void): void; close(): void };
    }>();
    ctx.skip(!dgram, SKIP.unixDgram);
    const socketPath = path.join(work, 'notify.sock');
    const messages: Array<{ at: number; text: string }> = [];
    const systemd = dgram!.createSocket('unix_dgram');
    systemd.on('message', (b) => messages.push({ at: performance.now(), text: b.toString() }));
    systemd.bind(socketPath);
    cleanups.push(() => systemd.close());
    const saved = { NOTIFY_SOCKET: process.env.NOTIFY_SOCKET, WATCHDOG_USEC: process.env.WATCHDOG_USEC };
    Object.assign(process.env, { NOTIFY_SOCKET: socketPath, WATCHDOG_USEC: '200000' }); // a ping every 100 ms
    let hang = false;
    let daemon: Daemon;
    try {
      daemon = await start(config('hung', broker.url, { INCEPTIOND_HEALTH_STALL_SEC: '1' }), engine({ hang: () => hang }));
    } finally {
      for (const [k, v] of Object.entries(saved))
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
    }
    await daemon.waitForResults(2);
    expect(daemon.health()).toMatchObject({ healthy: true, status: 'ok' });
    await vi.waitFor(() => expect(messages.map((m) => m.text)).toContain('WATCHDOG=1'));
    expect(messages.map((m) => m.text)).toContainEqual(expect.stringMatching(/^READY=1/));

    hang = true;
    await vi.waitFor(() => expect(daemon.health().healthy).toBe(false), { timeout: 5_000 });
    const unhealthy = performance.now();
    expect(daemon.health()).toMatchObject({ status: 'unhealthy', stuck: [expect.stringMatching(/inference has not completed .*hung/)] });
    // Give the watchdog a few of its periods: no ping may come once the check fails.
    await new Promise((r) => setTimeout(r, 500));
    expect(messages.filter((m) => m.text === 'WATCHDOG=1' && m.at > unhealthy + 150)).toEqual([]);
  });

  it('a start cancelled while the model is prepared undoes what it did', async () => {
    const abort = new AbortController();
    const cfg = config('cancel', broker.url);
    const started = Daemon.start(cfg, logger, {
      signal: abort.signal,
      overrides: {
        prepareModel: () =>
          new Promise<typeof model>((resolve) => {
            abort.abort();
            setTimeout(() => resolve(model), 10);
          }),
        createEngine: async () => engine(),
        createSource: (s) => camera(s.id),
      },
    });
    await expect(started).rejects.toBeInstanceOf(StartCancelledError);
    // The state directory lock was released: another daemon can use it.
    const again = await start(cfg);
    await again.waitForResults(1);
  });

  it('a clean stop publishes a retained "stopped" status', async () => {
    const daemon = await start(config('stop', broker.url));
    await daemon.waitForResults(1);
    await daemon.stop('test');
    const late = await watch('lc/stop/status');
    const retained = await late.waitFor((m) => m.retain);
    expect(JSON.parse(retained.text)).toMatchObject({ state: 'stopped', sources: { camera: { state: 'online' } } });
    expect(JSON.parse(retained.text)).not.toHaveProperty('error');
  });
});
