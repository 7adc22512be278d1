import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import mqtt, { type MqttClient } from 'mqtt';
import { pino, type Logger } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { type MessageProperties, MqttPublisher, type MqttPublisherOptions } from '../../src/publish/mqtt.js';
import { Outbox } from '../../src/publish/outbox.js';
import { buildResult, type Result } from '../../src/publish/payload.js';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { SKIP } from '../helpers/tools.js';

const silent = pino({ level: 'silent' });
const WAIT = { timeout: 15_000, interval: 20 };
const cleanups: Array<() => Promise<unknown> | unknown> = [];
let broker: TestBroker;

beforeAll(async () => {
  broker = await startBroker();
});
afterAll(async () => {
  await broker?.stop();
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const rand = () => Math.random().toString(16).slice(2, 10);
/** Each test its own base topic: retained status and sessions of other tests stay out of the way. */
const newBase = () => `inceptiond/mqtt5-${rand()}`;

async function outboxIn(dir?: string): Promise<Outbox> {
  const outbox = await Outbox.open(
    dir ?? (await mkdtemp(join(tmpdir(), 'inceptiond-pub5-'))),
    { maxMessages: 10_000, maxBytes: 50_000_000, maxAgeSec: 0 },
    silent,
  );
  cleanups.push(() => outbox.close());
  return outbox;
}

function publisher(base: string, outbox: Outbox, extra: Partial<MqttPublisherOptions> = {}, logger: Logger = silent): MqttPublisher {
  const p = new MqttPublisher(
    {
      url: broker.url,
      clientId: `pub5-${rand()}`,
      protocolVersion: 5,
      qos: 1,
      baseTopic: base,
      outbox,
      statusPayload: () => ({ state: 'online', version: '0.1.0', model: 'inception-v2', provider: 'cpu' }),
      reconnectPeriodMs: 100,
      connectTimeoutMs: 2_000,
      ...extra,
    },
    logger,
  );
  cleanups.push(() => p.stop(2_000));
  return p;
}

interface Received {
  topic: string;
  text: string;
  retain: boolean;
  properties: MessageProperties;
}

/** An MQTT 5 client that records every message on `filter` with its properties (SUBACK awaited). */
async function v5Client(filter?: string): Promise<{ client: MqttClient; got: Received[] }> {
  const client = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: `sub5-${rand()}`, reconnectPeriod: 0 });
  cleanups.push(() => client.endAsync(true));
  const got: Received[] = [];
  client.on('message', (topic, payload, packet) =>
    got.push({ topic, text: payload.toString('utf8'), retain: packet.retain, properties: packet.properties }),
  );
  if (filter) await client.subscribeAsync(filter, { qos: 1 });
  return { client, got };
}

/** A logger whose lines a test can read. */
function recordingLogger(): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _encoding, callback) {
      lines.push(JSON.parse(String(chunk)) as Record<string, unknown>);
      callback();
    },
  });
  return { logger: pino({ level: 'info' }, sink), lines };
}

function result(seq: number): Result {
  return buildResult({
    seq,
    source: 'camera',
    frame: { capturedAt: new Date(), width: 640, height: 480 },
    model: { name: 'inception-v2', precision: 'int8' },
    provider: 'cpu',
    labels: [{ index: 207, label: 'golden retriever', score: 0.83 }],
    latencyMs: { preprocess: 2, inference: 11.2, total: 17 },
  });
}

const seqOf = (m: Received) => (JSON.parse(m.text) as Result).seq;

describe('MqttPublisher over MQTT 5', () => {
  it('answers a request on its responseTopic with its correlationData, else on <base>/response/<op>', async (ctx) => {
    ctx.skip(broker.kind !== 'mosquitto', SKIP.mqtt5);
    const base = newBase();
    const p = publisher(base, await outboxIn());
    const seen: Array<{ op: string; topic: string }> = [];
    p.onRequest('echo', (body, request) => {
      seen.push(request);
      return { got: body.x };
    });
    await p.start();
    await p.waitUntilConnected(10_000);
    const replyTo = `replies/${rand()}`;
    const { client, got } = await v5Client(replyTo);
    await client.subscribeAsync(`${base}/response/+`, { qos: 1 });
    const correlationData = Buffer.from([0x00, 0xfe, 0x42]);

    await client.publishAsync(`${base}/request/echo`, JSON.stringify({ x: 1, transaction: 't1' }), {
      qos: 1,
      properties: { responseTopic: replyTo, correlationData },
    });
    await client.publishAsync(`${base}/request/echo`, JSON.stringify({ x: 2, transaction: 't2' }), { qos: 1 });
    // A wildcard cannot be published to: the answer goes to the default topic instead.
    await client.publishAsync(`${base}/request/echo`, JSON.stringify({ x: 3, transaction: 't3' }), {
      qos: 1,
      properties: { responseTopic: 'replies/+', correlationData },
    });
    await vi.waitFor(() => expect(got).toHaveLength(3), WAIT);

    const byTx = (tx: string) => got.find((m) => JSON.parse(m.text).transaction === tx)!;
    const direct = byTx('t1');
    expect(direct.topic).toBe(replyTo);
    expect(JSON.parse(direct.text)).toEqual({ status: 'ok', data: { got: 1 }, transaction: 't1' });
    expect(direct.properties?.contentType).toBe('application/json');
    expect(Buffer.compare(direct.properties!.correlationData!, correlationData)).toBe(0);

    const fallback = byTx('t2');
    expect(fallback.topic).toBe(`${base}/response/echo`);
    expect(JSON.parse(fallback.text)).toEqual({ status: 'ok', data: { got: 2 }, transaction: 't2' });
    expect(fallback.properties?.contentType).toBe('application/json');
    expect(fallback.properties?.correlationData).toBeUndefined();

    expect(byTx('t3').topic).toBe(`${base}/response/echo`);
    expect(seen).toEqual(Array(3).fill({ op: 'echo', topic: `${base}/request/echo` }));

    // Unregistered (a feature reloading): the requester is told, on its response topic.
    expect(p.removeRequest('echo')).toBe(true);
    expect(p.removeRequest('echo')).toBe(false);
    await client.publishAsync(`${base}/request/echo`, JSON.stringify({ transaction: 't4' }), {
      qos: 1,
      properties: { responseTopic: replyTo },
    });
    await vi.waitFor(() => expect(got).toHaveLength(4), WAIT);
    expect(got[3]!.topic).toBe(replyTo);
    expect(JSON.parse(got[3]!.text)).toMatchObject({ status: 'error', error: expect.stringMatching(/unknown request "echo"/) });
  });

  it('answers even when a handler throws something that is not an Error', async (ctx) => {
    ctx.skip(broker.kind !== 'mosquitto', SKIP.mqtt5);
    const base = newBase();
    const p = publisher(base, await outboxIn());
    p.onRequest('odd', () => {
      throw 'camera on fire'; // not an Error: some code throws strings
    });
    await p.start();
    await p.waitUntilConnected(10_000);
    const { client, got } = await v5Client(`${base}/response/+`);
    await client.publishAsync(`${base}/request/odd`, JSON.stringify({ transaction: 1 }), { qos: 1 });
    await vi.waitFor(() => expect(got).toHaveLength(1), WAIT);
    expect(JSON.parse(got[0]!.text)).toEqual({ status: 'error', error: 'camera on fire', transaction: 1 });
  });

  it('gives subscription handlers the message properties', async (ctx) => {
    ctx.skip(broker.kind !== 'mosquitto', SKIP.mqtt5);
    const base = newBase();
    const p = publisher(base, await outboxIn());
    const got: MessageProperties[] = [];
    p.subscribe(`${base}/feature/+/set`, (_topic, _payload, properties) => got.push(properties));
    await p.start();
    await p.waitUntilConnected(10_000);
    const { client } = await v5Client();
    await client.publishAsync(`${base}/feature/a/set`, '{}', { qos: 1, properties: { userProperties: { who: 'test' } } });
    await vi.waitFor(() => expect(got).toHaveLength(1), WAIT);
    expect(got[0]?.userProperties).toEqual({ who: 'test' });
  });

  it('sends Results and the status with a content type, user properties and the message expiry', async (ctx) => {
    ctx.skip(broker.kind !== 'mosquitto', SKIP.mqtt5);
    const base = newBase();
    const { got } = await v5Client(`${base}/#`);
    const p = publisher(base, await outboxIn(), {
      resultExpirySec: 600,
      resultUserProperties: { model: 'inception-v2', provider: 'cpu' },
    });
    await p.start();
    const labels = () => got.filter((m) => m.topic === `${base}/camera/labels`);
    await p.enqueueResult(result(1));
    await vi.waitFor(() => expect(labels()).toHaveLength(1), WAIT);
    // Applied when sent (Results still in the outbox included).
    p.setResultUserProperties({ model: 'inception-v2', provider: 'webgpu' });
    await p.enqueueResult(result(2));
    await vi.waitFor(() => expect(labels()).toHaveLength(2), WAIT);

    const [first, second] = labels();
    expect(seqOf(first!)).toBe(1);
    expect(first!.properties).toMatchObject({
      contentType: 'application/json',
      userProperties: { model: 'inception-v2', provider: 'cpu' },
    });
    // The broker passes on what is left of the expiry.
    expect(first!.properties?.messageExpiryInterval).toBeGreaterThan(590);
    expect(first!.properties?.messageExpiryInterval).toBeLessThanOrEqual(600);
    expect(second!.properties?.userProperties).toEqual({ model: 'inception-v2', provider: 'webgpu' });

    const status = got.find((m) => m.topic === `${base}/status`);
    expect(JSON.parse(status!.text)).toMatchObject({ state: 'online' });
    expect(status!.properties?.contentType).toBe('application/json');
    await p.stop(5_000);
    expect(p.stats()).toMatchObject({ outboxDepth: 0, published: 2, expired: 0 });
  });

  it('counts the expiry from when a Result entered the outbox: an expired one is dropped and counted', async (ctx) => {
    ctx.skip(broker.kind !== 'mosquitto', SKIP.mqtt5);
    const base = newBase();
    const outbox = await outboxIn();
    const topic = `${base}/camera/labels`;
    const appendAt = async (msAgo: number, seq: number) => {
      // Produced while the broker was away (the outbox stamps each entry with Date.now()).
      const now = Date.now();
      const clock = vi.spyOn(Date, 'now').mockReturnValue(now - msAgo);
      try {
        await outbox.append({ topic, payload: JSON.stringify(result(seq)), qos: 1 });
      } finally {
        clock.mockRestore();
      }
    };
    await appendAt(120_000, 1); // older than the expiry
    await appendAt(50_000, 2); // 10 s of its 60 left
    await appendAt(0, 3);
    const { got } = await v5Client(topic);
    const p = publisher(base, outbox, { resultExpirySec: 60 });
    await p.start();
    await vi.waitFor(() => expect(got).toHaveLength(2), WAIT);
    expect(got.map(seqOf)).toEqual([2, 3]);
    expect(got[0]!.properties?.messageExpiryInterval).toBeGreaterThanOrEqual(8);
    expect(got[0]!.properties?.messageExpiryInterval).toBeLessThanOrEqual(11);
    expect(got[1]!.properties?.messageExpiryInterval).toBeGreaterThan(55);
    await p.stop(5_000);
    expect(p.stats()).toMatchObject({ expired: 1, published: 2, outboxDepth: 0 });
  });

  it('with sessionExpirySec, a request sent while the daemon restarts reaches the new process', async (ctx) => {
    ctx.skip(broker.kind !== 'mosquitto', SKIP.mqtt5);
    const base = newBase();
    const clientId = `session-${rand()}`;
    const first = publisher(base, await outboxIn(), { clientId, sessionExpirySec: 60 });
    await first.start();
    await first.waitUntilConnected(10_000);
    await first.stop(5_000);

    const { client, got } = await v5Client(`${base}/response/+`);
    await client.publishAsync(`${base}/request/echo`, JSON.stringify({ x: 'while away', transaction: 'q' }), { qos: 1 });

    const { logger, lines } = recordingLogger();
    const second = publisher(base, await outboxIn(), { clientId, sessionExpirySec: 60 }, logger);
    const bodies: unknown[] = [];
    second.onRequest('echo', (body) => {
      bodies.push(body.x);
      return body.x;
    });
    await second.start();
    await vi.waitFor(() => expect(bodies).toEqual(['while away']), WAIT);
    await vi.waitFor(() => expect(got).toHaveLength(1), WAIT);
    expect(JSON.parse(got[0]!.text)).toEqual({ status: 'ok', data: 'while away', transaction: 'q' });
    expect(lines.find((l) => l.msg === 'mqtt: connected')).toMatchObject({ sessionPresent: true });
  });

  it('without sessionExpirySec, a request sent while the daemon is away is lost', async (ctx) => {
    ctx.skip(broker.kind !== 'mosquitto', SKIP.mqtt5);
    const base = newBase();
    const clientId = `session-${rand()}`;
    const first = publisher(base, await outboxIn(), { clientId, sessionExpirySec: 0 });
    await first.start();
    await first.waitUntilConnected(10_000);
    await first.stop(5_000);

    const { client } = await v5Client();
    await client.publishAsync(`${base}/request/echo`, JSON.stringify({ x: 'while away' }), { qos: 1 });

    const second = publisher(base, await outboxIn(), { clientId, sessionExpirySec: 0 });
    const bodies: unknown[] = [];
    second.onRequest('echo', (body) => void bodies.push(body.x));
    await second.start();
    await second.waitUntilConnected(10_000);
    // A kept session would have delivered the first request before this one.
    await client.publishAsync(`${base}/request/echo`, JSON.stringify({ x: 'after' }), { qos: 1 });
    await vi.waitFor(() => expect(bodies).toContain('after'), WAIT);
    expect(bodies).toEqual(['after']);
  });
});
