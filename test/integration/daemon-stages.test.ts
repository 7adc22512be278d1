/**
 * The real daemon process against a real broker: the publish policy `change` (a looping folder of two
 * alternating images vs one repeated image), motion gating (a still vs a changing lavfi stream), and
 * Home Assistant discovery used the way Home Assistant uses it (its switch pauses, its button snaps).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import sharp from 'sharp';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ResultPayload } from '../../src/publish/index.js';
import { collect, startBroker, type Collector, type TestBroker } from '../helpers/broker.js';
import { startDaemon, writeConfig, type DaemonProcess } from '../helpers/daemon-process.js';
import { testFfmpeg } from '../helpers/ffmpeg.js';
import { sharedModelEnv } from '../global-setup.js';

let broker: TestBroker;
let work: string;
const daemons: DaemonProcess[] = [];
const collectors: Collector[] = [];

beforeAll(async () => {
  broker = await startBroker();
  work = await mkdtemp(path.join(tmpdir(), 'inceptiond-stages-'));
  const scene = (background: string, x: number) =>
    sharp({ create: { width: 320, height: 240, channels: 3, background } })
      .composite([
        { input: Buffer.from(`<svg width="320" height="240"><rect x="${x}" y="60" width="120" height="120" fill="#fff"/></svg>`) },
      ])
      .jpeg()
      .toBuffer();
  await mkdir(path.join(work, 'alternating'));
  await mkdir(path.join(work, 'repeated'));
  await writeFile(path.join(work, 'alternating', 'a.jpg'), await scene('#c03020', 20));
  await writeFile(path.join(work, 'alternating', 'b.jpg'), await scene('#2040c0', 180));
  await writeFile(path.join(work, 'repeated', 'a.jpg'), await scene('#20a040', 100));
});
afterEach(async () => {
  await Promise.all(daemons.splice(0).map((d) => d.stop('SIGKILL')));
  await Promise.all(collectors.splice(0).map((c) => c.close()));
});
afterAll(async () => {
  await broker?.stop();
  await rm(work, { recursive: true, force: true });
});

async function start(name: string, config: Record<string, unknown>) {
  const dir = path.join(work, name);
  const baseTopic = `st/${name}`;
  const file = await writeConfig(dir, {
    deviceId: name,
    stateDir: path.join(dir, 'state'),
    mqtt: { url: broker.url, baseTopic },
    http: { enabled: false },
    metrics: { intervalSec: 1 },
    log: { level: 'info' },
    ...config,
  });
  const sub = await collect(broker.url, `${baseTopic}/#`);
  collectors.push(sub);
  const daemon = startDaemon(['run', '-c', file], sharedModelEnv(inject('modelCacheDir')));
  daemons.push(daemon);
  return { daemon, sub, baseTopic };
}

type Metrics = { gated: number; suppressed: { unchanged: number; rate: number } };

describe('pipeline stages', () => {
  it('publish policy change: every Result of alternating images, one of a repeated image; seq counts published Results', async () => {
    const { sub, baseTopic } = await start('policy', {
      capture: { backend: 'files', intervalMs: 50, files: { loop: true } },
      publish: { policy: 'change', scoreDelta: 0, heartbeatSec: 0 },
      sources: [
        { id: 'alternating', files: { path: path.join(work, 'alternating') } },
        { id: 'repeated', files: { path: path.join(work, 'repeated') } },
      ],
    });
    // The repeated image keeps being inferred and suppressed (the alternating one never is).
    await sub.waitFor((m) => m.topic === `${baseTopic}/metrics` && (JSON.parse(m.text) as Metrics).suppressed.unchanged >= 12, 60_000);
    const alternating = await sub.waitForCount(12, { filter: (m) => m.topic === `${baseTopic}/alternating/labels` });
    const repeated = sub.json<ResultPayload>(`${baseTopic}/repeated/labels`);
    expect(repeated.map((r) => r.seq)).toEqual([1]);
    const results = alternating.map((m) => JSON.parse(m.text) as ResultPayload);
    expect(results.map((r) => r.seq)).toEqual(results.map((_, i) => i + 1));
    // Each published Result differs from the one before (top label or score): a frame of the other image.
    for (let i = 1; i < results.length; i++) {
      const [prev, cur] = [results[i - 1]!.labels[0]!, results[i]!.labels[0]!];
      expect(prev.label !== cur.label || prev.score !== cur.score).toBe(true);
    }
  });

  it('motion gating: a still stream is inferred once, a changing one on every frame; gated frames are counted', async (ctx) => {
    const ffmpeg = testFfmpeg();
    const lavfi = (input: string) => ({ backend: 'ffmpeg', ffmpeg: { path: ffmpeg.path, input, inputFormat: 'lavfi', fps: 5 } });
    const { sub, baseTopic } = await start('motion', {
      capture: { backend: 'ffmpeg', intervalMs: 0, ffmpeg: { path: ffmpeg.path } },
      motion: { enabled: true, threshold: 0.02, maxIntervalSec: 0 },
      sources: [
        { id: 'still', ...lavfi('color=c=gray:size=320x240:rate=5') },
        { id: 'moving', ...lavfi('testsrc=size=320x240:rate=5') },
      ],
    });
    ctx.onTestFailed(() => console.log(sub.messages.filter((m) => m.topic.endsWith('/metrics')).map((m) => m.text)));
    // testsrc changes 5–8 % of a 64×48 thumbnail between frames at 5 fps (measured): above the threshold.
    const moving = await sub.waitForCount(10, { filter: (m) => m.topic === `${baseTopic}/moving/labels`, timeoutMs: 60_000 });
    await sub.waitFor((m) => m.topic === `${baseTopic}/metrics` && (JSON.parse(m.text) as Metrics).gated >= 8, 60_000);
    expect(sub.json<ResultPayload>(`${baseTopic}/still/labels`).map((r) => r.seq)).toEqual([1]);
    expect(moving.map((m) => (JSON.parse(m.text) as ResultPayload).seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it('Home Assistant: the discovery announces the source; its switch pauses it and its button publishes a snapshot', async (ctx) => {
    const { sub, baseTopic } = await start('ha', {
      deviceId: 'ha',
      capture: { backend: 'files', intervalMs: 100, files: { path: path.join(work, 'alternating'), loop: true } },
      homeassistant: { enabled: true, discoveryPrefix: 'hatest' },
    });
    ctx.onTestFailed(() => console.log(sub.messages.map((m) => `${m.topic} ${m.text.slice(0, 200)}`).join('\n')));
    const discovery = await collect(broker.url, 'hatest/+/inceptiond_ha/+/config');
    collectors.push(discovery);
    const configs = await discovery.waitForCount(6);
    const byComponent = new Map(configs.map((m) => [m.topic.split('/')[1]!, JSON.parse(m.text) as Record<string, string>]));
    expect([...byComponent.keys()].sort()).toEqual(['button', 'image', 'sensor', 'switch']);
    expect(byComponent.get('image')).toMatchObject({ image_topic: `${baseTopic}/camera/snapshot`, content_type: 'image/jpeg' });

    // What Home Assistant does when the user flips the switch and presses the button (once there is a frame).
    await sub.waitFor((m) => m.topic === `${baseTopic}/camera/labels`);
    const ha = await mqtt.connectAsync(broker.url, { protocolVersion: 4 });
    try {
      const sw = byComponent.get('switch')!;
      await ha.publishAsync(sw.command_topic!, sw.payload_on!, { qos: 1 });
      await sub.waitFor((m) => m.topic === sw.state_topic && m.payload.length > 0 && JSON.parse(m.text).paused === true);
      const button = byComponent.get('button')!;
      await ha.publishAsync(button.command_topic!, button.payload_press!, { qos: 1 });
      const snapshot = await sub.waitFor((m) => m.topic === `${baseTopic}/camera/snapshot`);
      expect((await sharp(snapshot.payload).metadata()).format).toBe('jpeg');
      await ha.publishAsync(sw.command_topic!, sw.payload_off!, { qos: 1 });
      await sub.waitFor((m) => m.topic === sw.state_topic && m.payload.length > 0 && JSON.parse(m.text).paused === false);
    } finally {
      await ha.endAsync();
    }
  });
});
