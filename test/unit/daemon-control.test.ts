/**
 * Request operations, per-source status and snapshots, on the daemon in-process (fake model, engine and
 * cameras; real preprocessing, outbox, publisher and broker).
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import pino from 'pino';
import sharp from 'sharp';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadConfig, type Config } from '../../src/config/index.js';
import { Daemon, SETTINGS_FILE } from '../../src/daemon/index.js';
import type { ResultPayload } from '../../src/publish/index.js';
import { collect, requester, startBroker, type Collector, type Requester, type TestBroker } from '../helpers/broker.js';
import { fakeCamera, fakeEngine, fakeModel } from '../helpers/fake-daemon.js';
import { SKIP } from '../helpers/tools.js';

const logger = pino({ level: 'silent' });
let broker: TestBroker;
let work: string;
let green: Buffer;
let png: Buffer;
const cleanups: Array<() => Promise<unknown> | unknown> = [];

beforeAll(async () => {
  broker = await startBroker();
  work = await mkdtemp(path.join(tmpdir(), 'daemon-control-'));
  green = await sharp({ create: { width: 64, height: 48, channels: 3, background: '#20a040' } })
    .jpeg()
    .toBuffer();
  png = await sharp({ create: { width: 40, height: 30, channels: 3, background: '#c02020' } })
    .png()
    .toBuffer();
});
afterAll(async () => {
  await broker?.stop();
  await rm(work, { recursive: true, force: true });
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function env(name: string, over: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    INCEPTIOND_STATE_DIR: path.join(work, name),
    INCEPTIOND_DEVICE_ID: name,
    INCEPTIOND_MQTT_URL: broker.url,
    INCEPTIOND_MQTT_BASE_TOPIC: `ctl/${name}`,
    INCEPTIOND_CAPTURE_BACKEND: 'files',
    INCEPTIOND_CAPTURE_FILES_PATH: work,
    INCEPTIOND_CAPTURE_INTERVAL_MS: '20',
    INCEPTIOND_HTTP_ENABLED: 'false',
    INCEPTIOND_METRICS_INTERVAL_SEC: '0',
    INCEPTIOND_LOG_LEVEL: 'fatal',
    ...over,
  };
}

interface Harness {
  daemon: Daemon;
  ask: Requester['ask'];
  requests: Requester;
  sub: Collector;
  base: string;
  cameras: Map<string, ReturnType<typeof fakeCamera>>;
}

/**
 * A daemon whose configuration source is a config "file" held in memory (`file`), so reload and set
 * go through the real loader and schema.
 */
async function start(name: string, over: Record<string, string> = {}, file: Record<string, unknown> = {}): Promise<Harness> {
  const base = `ctl/${name}`;
  const e = env(name, over);
  const load = (overlay: Record<string, unknown>): Config =>
    loadConfig({ env: e, overlay: { ...structuredClone(file), ...overlay }, checkFiles: false }).config;
  const sub = await collect(broker.url, `${base}/#`);
  cleanups.push(() => sub.close());
  const cameras = new Map<string, ReturnType<typeof fakeCamera>>();
  const daemon = await Daemon.start(load({}), logger, {
    configSource: { load, env: e },
    overrides: {
      prepareModel: async () => fakeModel,
      createEngine: async () => fakeEngine(),
      createSource: (s) => {
        const cam = fakeCamera(s.id, (n) => (s.id === 'door' && n % 2 === 0 ? png : green));
        cameras.set(s.id, cam);
        return cam;
      },
    },
  });
  cleanups.push(() => daemon.stop('test done'));
  const requests = await requester(broker.url, base);
  cleanups.push(() => requests.close());
  await daemon.waitForResults(1);
  return { daemon, ask: requests.ask.bind(requests), requests, sub, base, cameras };
}

type Response = { status: 'ok' | 'error'; data?: Record<string, unknown>; error?: string; transaction?: string };

describe('request operations', () => {
  it('pause stops one source (its camera released, not counted as stuck) and resume starts it again', async () => {
    const sources = JSON.stringify([
      { id: 'camera', backend: 'files', files: { path: work } },
      { id: 'door', backend: 'files', files: { path: work } },
    ]);
    const h = await start('pause', { INCEPTIOND_SOURCES: sources });
    const paused = await h.ask<Response>('pause', { source: 'door' });
    expect(paused).toMatchObject({ status: 'ok', data: { changed: ['door'], paused: ['door'] } });
    // The source's retained status says so, and the daemon stays online.
    await h.sub.waitFor((m) => m.topic === `${h.base}/door/status` && JSON.parse(m.text).paused === true);
    const doorLabels = () => h.sub.messages.filter((m) => m.topic === `${h.base}/door/labels`).length;
    const before = doorLabels();
    const cameraBefore = h.sub.messages.filter((m) => m.topic === `${h.base}/camera/labels`).length;
    await h.sub.waitForCount(cameraBefore + 5, { filter: (m) => m.topic === `${h.base}/camera/labels` });
    // At most the frame that was in flight when the pause came.
    expect(doorLabels() - before).toBeLessThanOrEqual(1);
    expect(h.daemon.health()).toMatchObject({ healthy: true });
    expect(h.daemon.statusPayload()).toMatchObject({ state: 'online', sources: { door: { paused: true } } });

    // Pausing again changes nothing; resume restarts the camera.
    expect(await h.ask<Response>('pause', { source: 'door' })).toMatchObject({ status: 'ok', data: { changed: [] } });
    const starts = h.cameras.get('door')!.starts;
    expect(await h.ask<Response>('resume', { source: 'door' })).toMatchObject({ status: 'ok', data: { changed: ['door'], paused: [] } });
    await h.sub.waitForCount(doorLabels() + 2, { filter: (m) => m.topic === `${h.base}/door/labels` });
    expect(h.cameras.get('door')!.starts).toBe(starts + 1);

    // Without a source: all of them; `paused: false` resumes (Home Assistant's switch uses one topic).
    expect(await h.ask<Response>('pause', {})).toMatchObject({ data: { paused: ['camera', 'door'] } });
    expect(await h.ask<Response>('pause', { source: 'camera', paused: false })).toMatchObject({ data: { paused: ['door'] } });
  });

  it('wrong parameters are refused with the field named; nothing changes', async () => {
    const h = await start('params');
    expect(await h.ask<Response>('pause', { source: 'nope' })).toMatchObject({
      status: 'error',
      error: expect.stringMatching(/no source "nope"/),
    });
    expect(await h.ask<Response>('pause', { source: 3 })).toMatchObject({
      status: 'error',
      error: expect.stringMatching(/^source: must be a string/),
    });
    expect(await h.ask<Response>('pause', { paused: 'yes' })).toMatchObject({ error: expect.stringMatching(/^paused: must be a boolean/) });
    expect(await h.ask<Response>('resume', { sources: 'camera' })).toMatchObject({
      error: expect.stringMatching(/^sources: unknown field for "resume" \(known: source\)/),
    });
    expect(await h.ask<Response>('status', { verbose: true })).toMatchObject({ error: expect.stringMatching(/it takes none/) });
    expect(await h.ask<Response>('set', { config: [1] })).toMatchObject({
      error: expect.stringMatching(/^config: must be an object, got array/),
    });
    expect(await h.ask<Response>('set', {})).toMatchObject({ error: expect.stringMatching(/^config: required/) });
    expect(await h.ask<Response>('resume', JSON.parse('{"constructor": 1}'))).toMatchObject({
      error: expect.stringMatching(/^constructor: unknown field/),
    });
    const proto = await h.ask<Response>('set', { config: JSON.parse('{"__proto__": {"inference": {"topK": 2}}}') });
    expect(proto).toMatchObject({ status: 'error', error: expect.stringMatching(/unknown key: __proto__/) });
    expect(await h.ask<Response>('nonsense')).toMatchObject({
      status: 'error',
      error: expect.stringMatching(/unknown request "nonsense"/),
    });
    expect(h.daemon.statusPayload()).toMatchObject({ sources: { camera: { paused: false } } });
  });

  it('set applies a live key at once, refuses restart and environment keys by name, validates like the file, and can persist', async () => {
    const h = await start('set');
    const labels = `${h.base}/camera/labels`;
    const ok = await h.ask<Response>('set', { config: { inference: { topK: 2 } } });
    expect(ok).toMatchObject({ status: 'ok', data: { applied: ['inference.topK'], restartNeeded: [], persisted: false } });
    const n = h.sub.messages.filter((m) => m.topic === labels).length;
    const later = await h.sub.waitForCount(n + 2, { filter: (m) => m.topic === labels });
    expect((JSON.parse(later.at(-1)!.text) as ResultPayload).labels).toHaveLength(2);

    // Needs a restart: refused whole, the key named, the running value kept.
    const restart = await h.ask<Response>('set', { config: { inference: { threads: 1, topK: 3 } } });
    expect(restart).toMatchObject({ status: 'error', error: expect.stringMatching(/needs a restart.*inference\.threads/) });
    // Out of range: the schema's message, with key and value.
    const range = await h.ask<Response>('set', { config: { inference: { topK: 0 } } });
    expect(range).toMatchObject({ status: 'error', error: expect.stringMatching(/inference\.topK = 0/) });
    const unknown = await h.ask<Response>('set', { config: { inference: { topk: 3 } } });
    expect(unknown).toMatchObject({ status: 'error', error: expect.stringMatching(/inference\.topk/) });
    // The environment wins over a request: refused, with the variable named.
    const fromEnv = await h.ask<Response>('set', { config: { log: { level: 'error' } } });
    expect(fromEnv.error).toMatch(/log\.level \(INCEPTIOND_LOG_LEVEL\)/);
    const nl = h.sub.messages.filter((m) => m.topic === labels).length;
    const still = await h.sub.waitForCount(nl + 1, { filter: (m) => m.topic === labels });
    expect((JSON.parse(still.at(-1)!.text) as ResultPayload).labels).toHaveLength(2);

    // persist: kept in the state directory, with what was set before.
    const kept = await h.ask<Response>('set', { config: { publish: { heartbeatSec: 30 } }, persist: true });
    expect(kept).toMatchObject({ status: 'ok', data: { persisted: true } });
    const settings = JSON.parse(await readFile(path.join(work, 'set', SETTINGS_FILE), 'utf8'));
    expect(settings).toEqual({ inference: { topK: 2 }, publish: { heartbeatSec: 30 } });
    // A reload keeps the values set by requests.
    expect(await h.ask<Response>('reload')).toMatchObject({ status: 'ok', data: { applied: [] } });
    expect((await h.ask<Response>('info')).data).toMatchObject({ settings: { inference: { topK: 2 } } });
  });

  it('info names what runs and redacts secrets; control.allow and control.enabled limit the operations live', async () => {
    const h = await start('allow', {}, { control: { allow: ['status', 'info', 'set'] } });
    const info = await h.ask<Response>('info');
    expect(info.data).toMatchObject({
      model: { name: 'fake', precision: 'int8' },
      provider: 'fake',
      deviceId: 'allow',
      sources: { camera: { backend: 'files', paused: false } },
      config: { mqtt: { baseTopic: 'ctl/allow' } },
    });
    expect(await h.ask<Response>('pause')).toMatchObject({
      status: 'error',
      error: 'operation "pause" is not allowed (control.allow: status, info, set)',
    });
    expect(await h.ask<Response>('set', { config: { control: { enabled: false } } })).toMatchObject({ status: 'ok' });
    expect(await h.ask<Response>('status')).toMatchObject({ status: 'error', error: 'control is disabled (control.enabled is false)' });
    expect((await h.daemon.metricsPeek()).ts).toBeTruthy();
  });

  it('snapshot publishes the newest frame as a JPEG, retained; PNG frames are converted', async () => {
    const sources = JSON.stringify([{ id: 'door', backend: 'files', files: { path: work } }]);
    const h = await start('snap', { INCEPTIOND_SOURCES: sources });
    const before = Date.now();
    const reply = await h.ask<Response>('snapshot');
    expect(reply).toMatchObject({ status: 'ok', data: { source: 'door', topic: `${h.base}/door/snapshot` } });
    const message = await h.sub.waitFor((m) => m.topic === `${h.base}/door/snapshot`);
    expect(message.payload.length).toBe(reply.data!.bytes);
    const meta = await sharp(message.payload).metadata();
    expect(meta.format).toBe('jpeg');
    // The door camera alternates a green 64×48 JPEG and a red 40×30 PNG: the snapshot is one of them.
    expect([64, 40]).toContain(meta.width);
    expect(Date.parse(reply.data!.capturedAt as string)).toBeGreaterThanOrEqual(before - 5_000);
    // Retained: a late subscriber gets it.
    const late = await collect(broker.url, `${h.base}/door/snapshot`);
    cleanups.push(() => late.close());
    expect((await late.waitForCount(1))[0]!.retain).toBe(true);
  });

  it('per-source status is retained beside the daemon status, cleared for a removed source and offline after a stop', async () => {
    const h = await start('srcstatus');
    const topic = `${h.base}/camera/status`;
    const online = await h.sub.waitFor((m) => m.topic === topic);
    expect(JSON.parse(online.text)).toMatchObject({ state: 'online', paused: false });
    expect(online.retain).toBe(false); // live delivery; the broker keeps it retained:
    const late = await collect(broker.url, topic);
    cleanups.push(() => late.close());
    expect((await late.waitForCount(1))[0]).toMatchObject({ retain: true });

    const sources = [{ id: 'door', backend: 'files', files: { path: work } }];
    expect(await h.ask<Response>('set', { config: { sources } })).toMatchObject({
      data: { sources: { added: ['door'], removed: ['camera'] } },
    });
    await h.sub.waitFor((m) => m.topic === topic && m.payload.length === 0);
    await h.sub.waitFor((m) => m.topic === `${h.base}/door/status`);
    await h.daemon.stop('test');
    await vi.waitFor(() =>
      expect(h.sub.json<{ state: string }>(`${h.base}/door/status`).filter((s) => s.state === 'offline')).toHaveLength(1),
    );
  });

  it('an MQTT 5 request is answered on its response topic with its correlation data', async (ctx) => {
    ctx.skip(broker.kind !== 'mosquitto', SKIP.mqtt5);
    const h = await start('v5', { INCEPTIOND_MQTT_PROTOCOL_VERSION: '5' });
    const client = await mqtt.connectAsync(broker.url, { protocolVersion: 5 });
    cleanups.push(() => client.endAsync(true));
    const replyTopic = 'ctl/v5-client/replies';
    await client.subscribeAsync(replyTopic, { qos: 1 });
    const reply = new Promise<{ payload: Buffer; properties?: mqtt.IPublishPacket['properties'] }>((resolve) =>
      client.on('message', (_topic, payload, packet) => resolve({ payload, properties: packet.properties })),
    );
    const correlationData = Buffer.from('req-42');
    await client.publishAsync(`${h.base}/request/pause`, JSON.stringify({ source: 'camera' }), {
      qos: 1,
      properties: { responseTopic: replyTopic, correlationData },
    });
    const answer = await reply;
    expect(JSON.parse(answer.payload.toString())).toMatchObject({ status: 'ok', data: { paused: ['camera'] } });
    expect(Buffer.from(answer.properties!.correlationData!)).toEqual(correlationData);
    expect(answer.properties!.contentType).toBe('application/json');
    // Not also on the default response topic.
    expect(h.requests.responses.filter((m) => m.topic === `${h.base}/response/pause`)).toEqual([]);
  });
});
