// Reconnection with capped exponential backoff and jitter, against a real broker that is stopped: each
// publisher connects through its own TCP front, which counts and timestamps the connection attempts and
// forwards them to the broker (refused while it is stopped). Tests await attempts, never sleep.
import { EventEmitter } from 'node:events';
import { mkdtemp } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { MqttPublisher, ReconnectBackoff, type MqttPublisherOptions } from '../../src/publish/mqtt.js';
import { Outbox } from '../../src/publish/outbox.js';
import { startBroker, type TestBroker } from '../helpers/broker.js';

const logger = pino({ level: 'silent' });
/** A delay is measured from one attempt to the next: add the time the refusal takes to show, on a loaded machine. */
const SLACK_MS = 80;
/** Timers and performance.now() rounding. */
const EARLY_MS = 2;

const cleanups: Array<() => Promise<unknown> | unknown> = [];
let broker: TestBroker;

beforeAll(async () => {
  broker = await startBroker();
});
afterAll(async () => {
  await broker?.stop();
});
beforeEach(async () => {
  await broker.restart(); // a test may leave it stopped
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Front {
  url: string;
  /** performance.now() of every accepted connection (= connection attempt of the publisher). */
  readonly attempts: number[];
  waitForAttempts(n: number, timeoutMs?: number): Promise<number[]>;
}

/** A TCP relay to the broker that records when each connection attempt arrives. */
async function front(): Promise<Front> {
  const attempts: number[] = [];
  const events = new EventEmitter();
  const sockets = new Set<net.Socket>();
  const server = net.createServer((downstream) => {
    attempts.push(performance.now());
    const upstream = net.connect(broker.port, '127.0.0.1');
    for (const s of [downstream, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined).on('close', () => {
        sockets.delete(s);
        downstream.destroy();
        upstream.destroy();
      });
    }
    downstream.pipe(upstream);
    upstream.pipe(downstream);
    events.emit('attempt');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  return {
    url: `mqtt://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    attempts,
    waitForAttempts(n, timeoutMs = 20_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (attempts.length < n) return;
          clearTimeout(timer);
          events.off('attempt', check);
          resolve(attempts.slice(0, n));
        };
        const timer = setTimeout(() => {
          events.off('attempt', check);
          reject(new Error(`timed out waiting for ${n} connection attempts (got ${attempts.length})`));
        }, timeoutMs);
        events.on('attempt', check);
        check();
      });
    },
  };
}

async function publisher(url: string, extra: Partial<MqttPublisherOptions>): Promise<MqttPublisher> {
  const outbox = await Outbox.open(
    await mkdtemp(join(tmpdir(), 'inceptiond-reconnect-')),
    { maxMessages: 100, maxBytes: 1e6, maxAgeSec: 0 },
    logger,
  );
  const p = new MqttPublisher(
    {
      url,
      clientId: `reconnect-${Math.random().toString(16).slice(2, 10)}`,
      protocolVersion: broker.kind === 'mosquitto' ? 5 : 4,
      baseTopic: 'inceptiond/reconnect-test',
      outbox,
      statusPayload: () => ({ state: 'online' }),
      connectTimeoutMs: 2_000,
      ...extra,
    },
    logger,
  );
  cleanups.push(() => outbox.close());
  cleanups.push(() => p.stop(2_000));
  return p;
}

const intervals = (times: number[]) => times.slice(1).map((t, i) => t - times[i]);

/** Where the delay before attempt k+1 must fall: ±20 % of its step (min·2^k, capped), kept within [min, max]. */
function window(k: number, min: number, max: number): [number, number] {
  const step = Math.min(max, min * 2 ** k);
  return [Math.max(min, step * 0.8), Math.min(max, step * 1.2)];
}

function expectDelay(measured: number, [lo, hi]: [number, number], what: string): void {
  expect(measured, `${what}: ${measured.toFixed(1)} ms, expected [${lo}, ${hi}]`).toBeGreaterThanOrEqual(lo - EARLY_MS);
  expect(measured, `${what}: ${measured.toFixed(1)} ms, expected [${lo}, ${hi}]`).toBeLessThanOrEqual(hi + SLACK_MS);
}

describe('ReconnectBackoff', () => {
  it('doubles from min to max, each delay within ±20 % of its step and within [min, max]; reset starts again', () => {
    const lowest = new ReconnectBackoff(1_000, 60_000, () => 0);
    expect(Array.from({ length: 9 }, () => lowest.next())).toEqual([1_000, 1_600, 3_200, 6_400, 12_800, 25_600, 48_000, 48_000, 48_000]);
    const highest = new ReconnectBackoff(1_000, 60_000, () => 1);
    expect(Array.from({ length: 9 }, () => highest.next())).toEqual([1_200, 2_400, 4_800, 9_600, 19_200, 38_400, 60_000, 60_000, 60_000]);
    highest.reset();
    expect(highest.next()).toBe(1_200);
    // min = max: a fixed delay, still jittered
    const fixed = new ReconnectBackoff(500, 500, () => 0);
    expect([fixed.next(), fixed.next()]).toEqual([400, 400]);
  });
});

describe('MqttPublisher reconnection', () => {
  it('waits longer after every failed attempt, from reconnectMinMs up to reconnectMaxMs', async () => {
    await broker.stop();
    const link = await front();
    const min = 100;
    const max = 800;
    const p = await publisher(link.url, { reconnectMinMs: min, reconnectMaxMs: max });
    await p.start();
    const delays = intervals(await link.waitForAttempts(8));
    for (const [k, d] of delays.entries()) expectDelay(d, window(k, min, max), `delay ${k + 1}`);
    // 100, 200, 400, then the cap: the last ones are several times the first
    expect(delays.at(-1)!).toBeGreaterThan(delays[0] * 4);
    for (const d of delays) expectDelay(d, [min, max], 'every delay');
  });

  it('starts again from reconnectMinMs after a connection, and keeps backing off after one that did not last', async () => {
    await broker.stop();
    const link = await front();
    const min = 100;
    const max = 800;
    // reconnectResetMs 0: any CONNACK counts as a connection that lasted.
    const p = await publisher(link.url, { reconnectMinMs: min, reconnectMaxMs: max, reconnectResetMs: 0 });
    const lost: number[] = [];
    p.onConnectionChange((up) => up || lost.push(performance.now()));
    await p.start();
    await link.waitForAttempts(6); // delays 100, 200, 400, 800, 800: at the cap
    await broker.restart();
    await p.waitUntilConnected(10_000);
    await broker.stop();
    const n = link.attempts.length;
    const after = await link.waitForAttempts(n + 3);
    expect(lost).toHaveLength(1);
    expectDelay(after[n] - lost[0], window(0, min, max), 'first delay after the connection');
    expectDelay(after[n + 1] - after[n], window(1, min, max), 'second delay after the connection');

    // The default reconnectResetMs (10 s): a connection dropped at once does not reset the delay.
    const link2 = await front();
    const q = await publisher(link2.url, { reconnectMinMs: min, reconnectMaxMs: max });
    const lost2: number[] = [];
    q.onConnectionChange((up) => up || lost2.push(performance.now()));
    await q.start();
    await link2.waitForAttempts(6);
    await broker.restart();
    await q.waitUntilConnected(10_000);
    await broker.stop();
    const m = link2.attempts.length;
    const next = (await link2.waitForAttempts(m + 1))[m];
    expect(lost2).toHaveLength(1);
    expectDelay(next - lost2[0], window(10, min, max), 'delay after a short-lived connection');
  });

  it('two publishers started together do not reconnect in lockstep', async () => {
    await broker.stop();
    const [a, b] = [await front(), await front()];
    const opts = { reconnectMinMs: 100, reconnectMaxMs: 400 };
    const [pa, pb] = [await publisher(a.url, opts), await publisher(b.url, opts)];
    await Promise.all([pa.start(), pb.start()]);
    const [ta, tb] = await Promise.all([a.waitForAttempts(10), b.waitForAttempts(10)]);
    const [da, db] = [intervals(ta), intervals(tb)];
    // Without jitter both would wait the same delays (differences of a millisecond or two); with ±20 %
    // jitter two delays of the same step differ by a third of the jitter window on average (~25 ms here).
    const meanDifference = da.reduce((sum, d, k) => sum + Math.abs(d - db[k]), 0) / da.length;
    expect(meanDifference).toBeGreaterThan(8);
    // Their attempts drift apart: not every attempt of one is within 5 ms of the other's.
    expect(ta.some((t, k) => Math.abs(t - tb[k]) > 5)).toBe(true);
  });

  it('stop() during a pending reconnection delay cancels it: no attempt afterwards', async () => {
    await broker.stop();
    const [a, b] = [await front(), await front()];
    const opts = { reconnectMinMs: 100, reconnectMaxMs: 100 };
    const [stopped, running] = [await publisher(a.url, opts), await publisher(b.url, opts)];
    await Promise.all([stopped.start(), running.start()]);
    await a.waitForAttempts(2); // now waiting ~100 ms before the third
    const began = performance.now();
    await stopped.stop(2_000);
    expect(performance.now() - began).toBeLessThan(500);
    const count = a.attempts.length;
    // The other publisher, on the same delays, makes five more attempts meanwhile.
    await b.waitForAttempts(b.attempts.length + 5);
    expect(a.attempts.length).toBe(count);
  });
});
