/**
 * The real daemon process (`node dist/cli.js run`) against a real broker, reading image files:
 * Results on the contract, seq strictly increasing and continuing after a restart, status online →
 * stopped, corrupt frames skipped and counted, and no Result lost across a network outage and kill -9.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { validateResult, type ResultPayload } from '../../src/publish/index.js';
import { collect, startBroker, startProxy, type Collector, type TestBroker } from '../helpers/broker.js';
import { runCli, startDaemon, writeConfig, type DaemonProcess, type LogLine } from '../helpers/daemon-process.js';
import { writeTinyClassifier } from '../helpers/tiny-model.js';
import { sharedModelEnv } from '../global-setup.js';

let broker: TestBroker;
let work: string;
let imagesDir: string;
const daemons: DaemonProcess[] = [];
const collectors: Collector[] = [];

beforeAll(async () => {
  broker = await startBroker();
  work = await mkdtemp(path.join(tmpdir(), 'inceptiond-it-'));
  imagesDir = path.join(work, 'images');
  const { mkdir } = await import('node:fs/promises');
  await mkdir(imagesDir);
  // Three distinct scenes and one file that is not an image: the daemon must skip and count it.
  const colours = ['#c03020', '#20a040', '#2040c0'];
  for (const [i, background] of colours.entries()) {
    const jpeg = await sharp({ create: { width: 320, height: 240, channels: 3, background } })
      .composite([{ input: Buffer.from(`<svg width="320" height="240"><circle cx="${80 + i * 80}" cy="120" r="50" fill="#fff"/></svg>`) }])
      .jpeg()
      .toBuffer();
    await writeFile(path.join(imagesDir, `frame-${i}.jpg`), jpeg);
  }
  await writeFile(path.join(imagesDir, 'frame-9-corrupt.jpg'), Buffer.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3, 4]));
});

afterEach(async () => {
  await Promise.all(daemons.splice(0).map((d) => d.stop('SIGKILL')));
  await Promise.all(collectors.splice(0).map((c) => c.close()));
});

afterAll(async () => {
  await broker?.stop();
  await rm(work, { recursive: true, force: true });
});

interface Setup {
  name: string;
  brokerUrl?: string;
  config?: Record<string, unknown>;
}

async function daemonConfig({ name, brokerUrl, config = {} }: Setup) {
  const dir = path.join(work, name);
  const baseTopic = `it/${name}`;
  const file = await writeConfig(dir, {
    deviceId: name,
    stateDir: path.join(dir, 'state'),
    capture: { backend: 'files', intervalMs: 50, files: { path: imagesDir, loop: true } },
    mqtt: {
      url: brokerUrl ?? broker.url,
      baseTopic,
      protocolVersion: broker.kind === 'mosquitto' ? 5 : 4,
    },
    http: { enabled: true, host: '127.0.0.1', port: 0 },
    metrics: { intervalSec: 0 },
    log: { level: 'info' },
    ...config,
  });
  return { file, baseTopic, labels: `${baseTopic}/camera/labels`, status: `${baseTopic}/status` };
}

function run(file: string): DaemonProcess {
  const daemon = startDaemon(['run', '-c', file], sharedModelEnv(inject('modelCacheDir')));
  daemons.push(daemon);
  return daemon;
}

async function watch(topicFilter: string): Promise<Collector> {
  const c = await collect(broker.url, topicFilter);
  collectors.push(c);
  return c;
}

function httpBase(daemon: DaemonProcess): Promise<string> {
  return daemon.waitForLog((l) => typeof l.http === 'string').then((l: LogLine) => l.http as string);
}

async function metricValue(base: string, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}

/** Polls an HTTP-observable condition (the daemon emits no event a test could await for it). */
async function until(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const seqs = (c: Collector, topic: string) => c.json<ResultPayload>(topic).map((r) => r.seq);

describe('daemon with the files source', () => {
  it('publishes valid Results with increasing seq, says stopped on SIGTERM and continues seq after a restart', async () => {
    const t = await daemonConfig({ name: 'files' });
    const sub = await watch(`${t.baseTopic}/#`);

    const first = run(t.file);
    const online = await sub.waitFor((m) => m.topic === t.status && JSON.parse(m.text).state === 'online');
    expect(online.retain).toBe(false); // live delivery to a subscriber; retained flag is checked below
    const results = await sub.waitForCount(8, { filter: (m) => m.topic === t.labels });
    const status = JSON.parse(online.text);
    for (const m of results) {
      const check = validateResult(JSON.parse(m.text));
      expect(check.ok ? [] : check.errors).toEqual([]);
      const r = JSON.parse(m.text) as ResultPayload;
      expect(r.source).toBe('camera');
      expect(r.provider).toBe(status.provider);
      expect(r.model.precision).toBe(status.model.precision);
      expect(r.labels.length).toBe(5);
    }
    // Different images give different scores: the Results describe the frames, not a constant.
    const outputs = new Set(results.map((m) => JSON.stringify((JSON.parse(m.text) as ResultPayload).labels)));
    expect(outputs.size).toBeGreaterThan(1);
    const firstRun = seqs(sub, t.labels).slice(0, 8);
    expect(firstRun).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);

    // The corrupt file was met at least twice (the folder loops): skipped, counted, state still online.
    const base = await httpBase(first);
    await until(
      async () => (await metricValue(base, 'inceptiond_frames_dropped_total', 'reason="corrupt"')) >= 1,
      'a corrupt frame to be counted',
    );
    const health = (await (await fetch(`${base}/healthz`)).json()) as { state: string };
    expect(health.state).toBe('online');
    // CPU by thread role: the inference worker named its thread, and ORT's threads inherited the name.
    expect(await metricValue(base, 'inceptiond_thread_cpu_seconds_total', 'thread="inference"')).toBeGreaterThan(0);

    expect(await first.stop('SIGTERM')).toBe(0);
    // A clean stop says "stopped" (the will's "offline" means a crash or a lost link).
    const stopped = await sub.waitFor((m) => m.topic === t.status && JSON.parse(m.text).state === 'stopped');
    expect(JSON.parse(stopped.text)).not.toHaveProperty('error');
    const lastBeforeRestart = Math.max(...seqs(sub, t.labels));
    // Every Result of the first run reached the broker before the clean stop: no gap, no duplicate.
    expect(seqs(sub, t.labels)).toEqual(Array.from({ length: lastBeforeRestart }, (_, i) => i + 1));

    // A new subscriber gets the retained stopped status.
    const late = await watch(t.status);
    const retained = await late.waitFor((m) => m.retain);
    expect(JSON.parse(retained.text).state).toBe('stopped');

    run(t.file);
    await sub.waitForCount(lastBeforeRestart + 3, { filter: (m) => m.topic === t.labels });
    const all = seqs(sub, t.labels);
    expect(all.slice(lastBeforeRestart, lastBeforeRestart + 3)).toEqual([
      lastBeforeRestart + 1,
      lastBeforeRestart + 2,
      lastBeforeRestart + 3,
    ]);
    await sub.waitFor((m) => m.topic === t.status && JSON.parse(m.text).state === 'online' && m !== online);
  });

  it('with two inference workers at full rate, starts both and keeps each Result with its frame, in order', async () => {
    const t = await daemonConfig({
      name: 'workers',
      config: { capture: { backend: 'files', intervalMs: 0, files: { path: imagesDir, loop: true } }, inference: { workers: 2 } },
    });
    const sub = await watch(t.labels);
    const daemon = run(t.file);
    const ready = [1, 2].map((k) => daemon.waitForLog((l) => l.worker === k && /inference session ready/.test(String(l.msg))));
    await Promise.all(ready);
    await sub.waitForCount(12);
    const results = sub.json<ResultPayload>(t.labels).slice(0, 12);
    expect(results.map((r) => r.seq)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    // The folder's three scenes come round in order (the corrupt file is skipped): a Result handed to the
    // wrong frame by the second worker would break the period.
    const scene = results.map((r) => JSON.stringify(r.labels));
    expect(new Set(scene.slice(0, 3)).size).toBe(3);
    for (let i = 3; i < 12; i++) expect(scene[i]).toBe(scene[i - 3]);
  });

  it('loses no Result across a network outage and a kill -9 during it, and keeps their order', async () => {
    const proxy = await startProxy(broker.port);
    try {
      const t = await daemonConfig({ name: 'outage', brokerUrl: proxy.url });
      const sub = await watch(t.labels);
      const daemon = run(t.file);
      await sub.waitForCount(3);
      const base = await httpBase(daemon);

      proxy.cut();
      const deliveredAtCut = sub.messages.length;
      // Results keep coming while the broker is unreachable; they wait in the outbox.
      await until(
        async () => (await metricValue(base, 'inceptiond_outbox_messages', '')) >= 5 || (await outboxDepth(base)) >= 5,
        'the outbox to hold 5 Results',
      );
      const producedBeforeKill = await metricValue(base, 'inceptiond_results_total', 'source="camera"');
      expect(await daemon.stop('SIGKILL')).toBe('SIGKILL');

      proxy.restore();
      run(t.file);
      await sub.waitFor((m) => (JSON.parse(m.text) as ResultPayload).seq >= producedBeforeKill + 2, 60_000);

      const received = seqs(sub, t.labels);
      expect(received.length).toBeGreaterThan(deliveredAtCut);
      // No loss: every seq up to the highest received arrived (QoS 1 may repeat one, never skip one).
      const unique = [...new Set(received)];
      const max = Math.max(...received);
      expect(unique.sort((a, b) => a - b)).toEqual(Array.from({ length: max }, (_, i) => i + 1));
      // Order: a first delivery never comes after a higher seq.
      const firstSeen = received.filter((s, i) => received.indexOf(s) === i);
      expect(firstSeen).toEqual([...firstSeen].sort((a, b) => a - b));
    } finally {
      await proxy.close();
    }
  });

  it('runs a model quantized for another provider and says which target the running one wants', async () => {
    const tiny = await writeTinyClassifier(work, { size: 16, channels: 4, depth: 2, classes: 5, seed: 4 });
    const npu = path.join(work, 'tiny.qnn.onnx');
    expect((await runCli(['model', 'quantize', tiny, npu, '--calibration', imagesDir, '--target', 'qnn-htp'])).code).toBe(0);
    const t = await daemonConfig({ name: 'target', config: { model: { path: npu } } });
    const sub = await watch(t.labels);
    const daemon = run(t.file);
    await sub.waitForCount(1);
    const warning = await daemon.waitForLog((l) => l.level === 40 && l.quantizedFor === 'qnn-htp');
    expect(warning).toMatchObject({ provider: 'cpu', suggested: 'cpu' });
    expect(warning.msg).toContain('--target cpu');
  });

  it('refuses to start a second daemon on the same state directory, naming the first', async () => {
    const t = await daemonConfig({ name: 'twice' });
    const sub = await watch(t.labels);
    const first = run(t.file);
    await sub.waitForCount(1);
    const second = run(t.file);
    expect(await second.exited).toBe(1);
    const fatal = second.logs.find((l) => l.level === 60);
    expect(fatal?.msg).toContain(`in use by another inceptiond (pid ${first.child.pid})`);
    // The first one is unharmed.
    await sub.waitForCount(sub.messages.length + 2);
    expect(await first.stop('SIGTERM')).toBe(0);
  });
});

/** inceptiond_outbox_messages has no labels: read the plain sample line. */
async function outboxDepth(base: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('inceptiond_outbox_messages '));
  return line ? Number(line.split(' ')[1]) : 0;
}
