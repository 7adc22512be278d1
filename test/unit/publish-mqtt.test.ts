import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { MqttPublisher, type MqttPublisherOptions } from '../../src/publish/mqtt.js';
import { Outbox } from '../../src/publish/outbox.js';
import { buildResult, validateResult, type Result } from '../../src/publish/payload.js';
import { collect, startBroker, startProxy, type Collector, type TcpProxy, type TestBroker } from '../helpers/broker.js';
import { SKIP } from '../helpers/tools.js';

const logger = pino({ level: 'silent' });
const BASE = 'inceptiond/test-dev';
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

async function outboxIn(dir?: string): Promise<Outbox> {
  const outbox = await Outbox.open(
    dir ?? (await mkdtemp(join(tmpdir(), 'inceptiond-pub-'))),
    { maxMessages: 10_000, maxBytes: 50_000_000, maxAgeSec: 0 },
    logger,
  );
  cleanups.push(() => outbox.close());
  return outbox;
}

function publisher(url: string, outbox: Outbox, extra: Partial<MqttPublisherOptions> = {}): MqttPublisher {
  const p = new MqttPublisher(
    {
      url,
      clientId: `pub-${Math.random().toString(16).slice(2, 10)}`,
      protocolVersion: broker.kind === 'mosquitto' ? 5 : 4,
      qos: 1,
      baseTopic: BASE,
      outbox,
      statusPayload: () => ({ state: 'online', version: '0.1.0', model: 'inception-v2', provider: 'cpu' }),
      reconnectPeriodMs: 100,
      connectTimeoutMs: 2_000,
      inflightWindow: 8,
      ...extra,
    },
    logger,
  );
  cleanups.push(() => p.stop(2_000));
  return p;
}

async function collector(topic: string, url = broker.url): Promise<Collector> {
  const c = await collect(url, topic);
  cleanups.push(() => c.close());
  return c;
}

async function proxy(target = broker.port): Promise<TcpProxy> {
  const p = await startProxy(target);
  cleanups.push(() => p.close());
  return p;
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

/** seq numbers in order of first delivery (duplicates allowed by at-least-once are removed). */
function firstDeliveries(c: Collector): number[] {
  const seen = new Set<number>();
  for (const r of c.json<Result>(`${BASE}/camera/labels`)) seen.add(r.seq);
  return [...seen];
}
const distinctSeqs = (c: Collector) => firstDeliveries(c).length;
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

async function waitForDistinct(c: Collector, n: number, timeoutMs = 20_000): Promise<void> {
  await c.waitFor(() => distinctSeqs(c) >= n, timeoutMs);
}

describe('MqttPublisher', () => {
  it('delivers Results in order, each a valid Result, and empties the outbox', async () => {
    const labels = await collector(`${BASE}/+/labels`);
    const outbox = await outboxIn();
    const p = publisher(broker.url, outbox);
    await p.start();
    for (let seq = 1; seq <= 50; seq++) await p.enqueueResult(result(seq));
    await waitForDistinct(labels, 50);
    expect(firstDeliveries(labels)).toEqual(range(1, 50));
    for (const r of labels.json(`${BASE}/camera/labels`)) expect(validateResult(r)).toMatchObject({ ok: true });
    expect(p.stats().connected).toBe(true);
    await p.stop(5_000); // a clean stop waits for the last PUBACKs
    expect(p.stats()).toMatchObject({ outboxDepth: 0, published: 50, dropped: 0 });
  });

  it('gives features their subscriptions again after a reconnect, and tells connects and losses', async () => {
    const link = await proxy();
    const p = publisher(link.url, await outboxIn());
    const changes: boolean[] = [];
    p.onConnectionChange((connected) => changes.push(connected));
    const got: string[] = [];
    p.subscribe(`${BASE}/feature/+/set`, (topic, payload) => got.push(`${topic}=${payload.toString()}`));
    await p.start();
    await p.waitUntilConnected(10_000);
    const sender = await mqtt.connectAsync(broker.url, { protocolVersion: 4 });
    cleanups.push(() => sender.endAsync(true));
    await sender.publishAsync(`${BASE}/feature/a/set`, 'one', { qos: 1 });
    await sender.publishAsync(`${BASE}/feature/a/b/set`, 'not matched', { qos: 1 });
    await vi.waitFor(() => expect(got).toHaveLength(1));

    link.cut(); // the broker forgets the session's subscriptions
    await vi.waitFor(() => expect(changes).toContain(false));
    link.restore();
    await p.waitUntilConnected(10_000);
    await sender.publishAsync(`${BASE}/feature/b/set`, 'two', { qos: 1 });
    await vi.waitFor(() => expect(got).toHaveLength(2));
    expect(got).toEqual([`${BASE}/feature/a/set=one`, `${BASE}/feature/b/set=two`]);
    expect(changes).toEqual([true, false, true]);
  });

  it('speaks MQTT 5: Results and the retained status reach an MQTT 5 subscriber', async (ctx) => {
    ctx.skip(broker.kind !== 'mosquitto', SKIP.mqtt5);
    const sub = await collect(broker.url, `${BASE}/#`, { protocolVersion: 5 });
    cleanups.push(() => sub.close());
    const p = publisher(broker.url, await outboxIn(), { protocolVersion: 5 });
    await p.start();
    for (let seq = 1; seq <= 3; seq++) await p.enqueueResult(result(seq));
    await waitForDistinct(sub, 3);
    expect(firstDeliveries(sub)).toEqual([1, 2, 3]);
    // (an earlier test's publisher left its retained "offline" there: wait for ours)
    const status = await sub.waitFor((m) => m.topic === `${BASE}/status` && !m.retain);
    expect(JSON.parse(status.text)).toMatchObject({ state: 'online' });
    await p.stop(5_000);
    expect(p.stats()).toMatchObject({ outboxDepth: 0, published: 3 });
  });

  it('keeps every Result produced while the broker is down and delivers them in order after its restart', async () => {
    const own = await startBroker();
    cleanups.push(() => own.stop());
    const link = await proxy(own.port);
    const outbox = await outboxIn();
    const p = publisher(link.url, outbox);
    await p.start();
    await p.waitUntilConnected(10_000);
    let labels = await collector(`${BASE}/+/labels`, own.url);
    for (let seq = 1; seq <= 5; seq++) await p.enqueueResult(result(seq));
    await waitForDistinct(labels, 5);

    link.cut(); // the broker's restart must not race the publisher's reconnect against our resubscription
    await own.stop();
    await labels.close();
    for (let seq = 6; seq <= 40; seq++) await p.enqueueResult(result(seq));
    expect(p.stats().connected).toBe(false);
    // 35 new ones, plus any of 1..5 whose PUBACK the cut swallowed (they are sent again).
    expect(p.stats().outboxDepth).toBeGreaterThanOrEqual(35);

    await own.restart();
    labels = await collector(`${BASE}/+/labels`, own.url);
    link.restore();
    await labels.waitFor(() => firstDeliveries(labels).includes(40));
    const delivered = firstDeliveries(labels);
    expect(delivered.filter((seq) => seq >= 6)).toEqual(range(6, 40));
    expect(delivered).toEqual([...delivered].sort((a, b) => a - b)); // re-sent ones come first, in order
    await p.stop(5_000);
    expect(p.stats()).toMatchObject({ outboxDepth: 0, reconnects: 1 });
  });

  it('counts what the bounded outbox drops during an outage and delivers the newest in order', async () => {
    const link = await proxy();
    const outbox = await Outbox.open(
      await mkdtemp(join(tmpdir(), 'inceptiond-pub-')),
      { maxMessages: 10, maxBytes: 1e9, maxAgeSec: 0 },
      logger,
    );
    cleanups.push(() => outbox.close());
    const labels = await collector(`${BASE}/+/labels`);
    const p = publisher(link.url, outbox);
    link.cut();
    await p.start();
    for (let seq = 1; seq <= 25; seq++) await p.enqueueResult(result(seq));
    expect(p.stats()).toMatchObject({ dropped: 15, outboxDepth: 10 });
    link.restore();
    await waitForDistinct(labels, 10);
    expect(firstDeliveries(labels)).toEqual(range(16, 25));
  });

  it('resumes from disk: a new publisher on the same outbox delivers what the previous one could not', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'inceptiond-pub-'));
    const deadLink = await proxy();
    deadLink.cut();
    const first = await Outbox.open(dir, { maxMessages: 1000, maxBytes: 1e9, maxAgeSec: 0 }, logger);
    const p1 = publisher(deadLink.url, first);
    await p1.start();
    for (let seq = 1; seq <= 20; seq++) await p1.enqueueResult(result(seq));
    await p1.stop(1_000);
    await first.close();

    const labels = await collector(`${BASE}/+/labels`);
    const p2 = publisher(broker.url, await outboxIn(dir));
    await p2.start();
    await waitForDistinct(labels, 20);
    expect(firstDeliveries(labels)).toEqual(range(1, 20));
  });

  it('publishes its status retained on connect, and the will says offline when the link drops', async () => {
    const link = await proxy();
    const p = publisher(link.url, await outboxIn(), { keepaliveSec: 5 });
    await p.start();
    await p.waitUntilConnected(10_000);
    const status = await collector(`${BASE}/status`); // joins after: sees the retained message
    const online = await status.waitFor((m) => m.text.includes('"online"'));
    expect(online.retain).toBe(true);
    expect(JSON.parse(online.text)).toMatchObject({ state: 'online', version: '0.1.0', model: 'inception-v2' });

    p.setStatus({ state: 'degraded', error: 'camera unplugged' });
    const degraded = await status.waitFor((m) => m.text.includes('"degraded"'));
    expect(JSON.parse(degraded.text)).toMatchObject({ state: 'degraded', error: 'camera unplugged' });

    link.cut(); // abrupt: no DISCONNECT, the broker publishes the will
    const will = await status.waitFor((m) => m.text.includes('"offline"'));
    expect(JSON.parse(will.text)).toMatchObject({ state: 'offline', model: 'inception-v2' });
    const late = await collector(`${BASE}/status`);
    expect(JSON.parse((await late.waitFor(() => true)).text)).toMatchObject({ state: 'offline' });

    link.restore(); // and online again, retained, after the reconnect
    await status.waitFor((m) => m !== will && status.messages.indexOf(m) > status.messages.indexOf(will) && m.text.includes('"degraded"'));

    // The status says the present: online again, the old error is gone.
    p.setStatus({ state: 'online' });
    const recovered = await status.waitFor(
      (m) => m.text.includes('"online"') && status.messages.indexOf(m) > status.messages.indexOf(will),
    );
    expect(JSON.parse(recovered.text)).not.toHaveProperty('error');
  });

  it('a clean stop publishes a retained stopped status (the will says offline)', async () => {
    const p = publisher(broker.url, await outboxIn());
    await p.start();
    await p.waitUntilConnected(10_000);
    await p.stop(5_000);
    const status = await collector(`${BASE}/status`);
    const retained = await status.waitFor(() => true);
    expect(retained.retain).toBe(true);
    expect(JSON.parse(retained.text)).toMatchObject({ state: 'stopped', version: '0.1.0' });
    expect(JSON.parse(retained.text).since).toMatch(/Z$/);
  });

  it('stop() returns while the broker never acknowledges, and the outbox keeps the unacknowledged Results', async () => {
    const link = await proxy();
    const outbox = await outboxIn();
    const p = publisher(link.url, outbox);
    await p.start();
    await p.waitUntilConnected(10_000);
    link.freeze(); // connected, but nothing comes back: QoS 1 publishes stay in flight
    for (let seq = 1; seq <= 12; seq++) await p.enqueueResult(result(seq));
    expect(p.stats().inflight).toBeGreaterThan(0);
    const stopped = p.stop(1_000).then(() => 'stopped');
    const hung = new Promise((resolve) => setTimeout(() => resolve('hung'), 15_000).unref());
    expect(await Promise.race([stopped, hung])).toBe('stopped');
    expect(outbox.depth).toBe(12);
    expect(p.publishNow(`${BASE}/metrics`, '{}')).toBe(false);
  });

  it('drops and counts live messages while offline instead of queueing them', async () => {
    const link = await proxy();
    link.cut();
    const p = publisher(link.url, await outboxIn());
    await p.start();
    expect(p.publishNow(`${BASE}/metrics`, '{"fps":1}')).toBe(false);
    expect(p.publishNow(`${BASE}/camera/snapshot`, Buffer.from([0xff, 0xd8]))).toBe(false);
    expect(p.stats().liveDropped).toBe(2);
  });

  it('answers requests, including malformed JSON, non-object bodies, failing handlers and unknown ops', async () => {
    const p = publisher(broker.url, await outboxIn());
    p.onRequest('echo', (body) => ({ got: body.x }));
    p.onRequest('fail', () => Promise.reject(new Error('camera busy')));
    await p.start();
    await p.waitUntilConnected(10_000);
    const responses = await collector(`${BASE}/response/+`);
    const requester = await mqtt.connectAsync(broker.url, { protocolVersion: 4 });
    cleanups.push(() => requester.endAsync(true));
    const send = async (op: string, body: string) => requester.publishAsync(`${BASE}/request/${op}`, body, { qos: 1 });
    await send('echo', JSON.stringify({ x: 42, transaction: 't1' }));
    await send('echo', '{oops');
    await send('echo', '[1,2]');
    await send('fail', JSON.stringify({ transaction: 9 }));
    await send('nope', JSON.stringify({ transaction: 't2' }));
    const byTx = (tx: unknown) => (m: { text: string }) => JSON.parse(m.text).transaction === tx;
    expect(JSON.parse((await responses.waitFor(byTx('t1'))).text)).toEqual({ status: 'ok', data: { got: 42 }, transaction: 't1' });
    const fail = await responses.waitFor(byTx(9));
    expect(fail.topic).toBe(`${BASE}/response/fail`);
    expect(JSON.parse(fail.text)).toEqual({ status: 'error', error: 'camera busy', transaction: 9 });
    const unknown = await responses.waitFor(byTx('t2'));
    expect(unknown.topic).toBe(`${BASE}/response/nope`);
    expect(JSON.parse(unknown.text)).toMatchObject({ status: 'error', error: expect.stringMatching(/unknown request "nope"/) });
    const malformed = await responses.waitFor((m) => /invalid JSON/.test(m.text));
    expect(JSON.parse(malformed.text)).toMatchObject({ status: 'error' });
    const nonObject = await responses.waitFor((m) => /must be a JSON object/.test(m.text));
    expect(nonObject.topic).toBe(`${BASE}/response/echo`);
    expect(p.stats().connected).toBe(true); // none of it broke the publisher
  });
});

describe('MqttPublisher: two devices with one client id', () => {
  it('says so in the log instead of reconnecting in silence', async () => {
    let clash!: (line: { msg: string }) => void;
    const clashLog = new Promise<{ msg: string }>((resolve) => (clash = resolve));
    const sink = () =>
      new Writable({
        write(chunk, _encoding, callback) {
          const line = JSON.parse(String(chunk)) as { msg: string };
          if (/same client id/.test(line.msg)) clash(line);
          callback();
        },
      });
    const clientId = `dup-${Math.random().toString(16).slice(2, 10)}`;
    // Each takes the session from the other on every reconnect, as two misconfigured boards would.
    for (let i = 0; i < 2; i++) {
      const p = new MqttPublisher(
        {
          url: broker.url,
          clientId,
          protocolVersion: broker.kind === 'mosquitto' ? 5 : 4,
          qos: 1,
          baseTopic: BASE,
          outbox: await outboxIn(),
          statusPayload: () => ({ state: 'online' }),
          reconnectPeriodMs: 100,
        },
        pino({ level: 'error' }, sink()),
      );
      cleanups.push(() => p.stop(1_000));
      await p.start();
    }
    expect((await clashLog).msg).toContain('Give each device its own deviceId or mqtt.clientId');
  });
});
