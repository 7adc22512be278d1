// The publisher's counts on /metrics, against a real broker: Results and other messages published, the
// outbox's size in messages and bytes during an outage, failures, reconnects and connection errors.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Metrics } from '../../src/ops/index.js';
import { MqttPublisher } from '../../src/publish/mqtt.js';
import { Outbox } from '../../src/publish/outbox.js';
import { buildResult } from '../../src/publish/payload.js';
import { freePort, startBroker, startProxy, type TestBroker } from '../helpers/broker.js';

const logger = pino({ level: 'silent' });
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

/** A publisher to `url` whose counts a Metrics reads at each scrape, as the daemon wires them. */
async function setup(url: string) {
  const outbox = await Outbox.open(
    await mkdtemp(join(tmpdir(), 'metrics-pub-')),
    { maxMessages: 1000, maxBytes: 1e8, maxAgeSec: 0 },
    logger,
  );
  cleanups.push(() => outbox.close());
  const publisher = new MqttPublisher(
    {
      url,
      clientId: `metrics-${Math.random().toString(16).slice(2, 10)}`,
      protocolVersion: broker.kind === 'mosquitto' ? 5 : 4,
      qos: 1,
      baseTopic: 'inceptiond/metrics-test',
      outbox,
      statusPayload: () => ({ state: 'online' }),
      reconnectMinMs: 50,
      reconnectMaxMs: 100,
      connectTimeoutMs: 2_000,
    },
    logger,
  );
  cleanups.push(() => publisher.stop(2_000));
  const metrics = new Metrics();
  cleanups.push(() => metrics.close());
  metrics.trackPublishing(() => ({ ...publisher.stats(), outboxWriteErrors: outbox.writeErrors, outboxCorrupt: outbox.corrupt }));
  const value = async (series: string) => {
    const line = (await metrics.prometheus()).split('\n').find((l) => l.startsWith(`${series} `));
    return line === undefined ? undefined : Number(line.slice(series.length + 1));
  };
  return { outbox, publisher, metrics, value };
}

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

let seq = 0;
const result = () =>
  buildResult({
    seq: ++seq,
    source: 'camera',
    frame: { capturedAt: new Date(), width: 640, height: 480 },
    model: { name: 'inception-v2', precision: 'int8' },
    provider: 'cpu',
    labels: [{ index: 1, label: 'cat', score: 0.9 }],
    latencyMs: { preprocess: 1, inference: 2, total: 3 },
  });

describe('publisher metrics', () => {
  it('move with what happens: Results and other messages published, the outbox during an outage, failures, a reconnect', async () => {
    const link = await startProxy(broker.port);
    cleanups.push(() => link.close());
    const { publisher, outbox, value } = await setup(link.url);
    await publisher.start();
    await publisher.waitUntilConnected(10_000);
    expect(await value('inceptiond_mqtt_connected')).toBe(1);

    for (let i = 0; i < 3; i++) await publisher.enqueueResult(result());
    await until(() => publisher.stats().published >= 3, '3 Results acknowledged');
    expect(await value('inceptiond_mqtt_messages_published_total{kind="result"}')).toBe(3);
    // The retained status went out on connect.
    await until(async () => ((await value('inceptiond_mqtt_messages_published_total{kind="other"}')) ?? 0) >= 1, 'the status');
    expect(await value('inceptiond_outbox_messages')).toBe(0);
    expect(await value('inceptiond_outbox_bytes')).toBe(0);

    link.cut();
    await until(() => !publisher.stats().connected, 'the connection to drop');
    for (let i = 0; i < 2; i++) await publisher.enqueueResult(result());
    expect(publisher.publishNow('inceptiond/metrics-test/metrics', '{}')).toBe(false);
    expect(await value('inceptiond_mqtt_connected')).toBe(0);
    expect(await value('inceptiond_outbox_messages')).toBe(2);
    const bytes = (await value('inceptiond_outbox_bytes'))!;
    expect(bytes).toBeGreaterThan(0);
    expect(bytes).toBe(outbox.bytes);
    expect(await value('inceptiond_mqtt_publish_failures_total{kind="other"}')).toBe(1);
    expect(await value('inceptiond_mqtt_reconnects_total')).toBe(0);

    link.restore();
    await until(() => publisher.stats().connected && publisher.stats().outboxDepth === 0, 'the reconnect and the drain');
    expect(await value('inceptiond_mqtt_reconnects_total')).toBe(1);
    expect(await value('inceptiond_mqtt_messages_published_total{kind="result"}')).toBe(5);
    expect(await value('inceptiond_outbox_messages')).toBe(0);
    expect(await value('inceptiond_outbox_bytes')).toBe(0);
  });

  it('counts connection errors while the broker cannot be reached', async () => {
    const { publisher, value } = await setup(`mqtt://127.0.0.1:${await freePort()}`);
    await publisher.start();
    await until(() => publisher.stats().connectionErrors >= 2, 'two failed attempts');
    expect(await value('inceptiond_mqtt_connection_errors_total')).toBeGreaterThanOrEqual(2);
    expect(await value('inceptiond_mqtt_connected')).toBe(0);
  });
});
