/**
 * A real MQTT broker for tests, over TCP on 127.0.0.1: Mosquitto when installed (MQTT 5, like
 * production), otherwise an in-process Aedes 1.2 (MQTT 3.1.1 only). `INCEPTIOND_TEST_BROKER=aedes`
 * forces Aedes. Plus `collect()`, a subscriber that lets a test await messages instead of sleeping.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { freePort } from '../../src/util/index.js';
import { which } from './which.js';

export { freePort };

export interface TestBroker {
  kind: 'mosquitto' | 'aedes';
  url: string;
  port: number;
  /** Stops the broker (abruptly for clients: their connections drop). Idempotent. */
  stop(): Promise<void>;
  /** Starts it again on the same port, with no retained state (persistence off). */
  restart(): Promise<void>;
}

const START_DEADLINE_MS = 10_000;

export async function startBroker(opts: { port?: number } = {}): Promise<TestBroker> {
  const port = opts.port ?? (await freePort());
  const binary = process.env.INCEPTIOND_TEST_BROKER === 'aedes' ? null : findMosquitto();
  return binary ? startMosquitto(binary, port) : startAedes(port);
}

/** Debian installs mosquitto in /usr/sbin, which a user's PATH may lack. */
export function findMosquitto(): string | null {
  return which('mosquitto', ['/usr/sbin', '/usr/local/sbin']);
}

// Brokers still running when the test process exits are killed, so no mosquitto outlives a crashed run.
const liveChildren = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of liveChildren) child.kill('SIGKILL');
});

export interface TlsBrokerOptions {
  /** PEM files; mosquitto reads them after dropping to its own user when started as root: make them world-readable. */
  cafile: string;
  certfile: string;
  keyfile: string;
  /** Clients must present a certificate signed by `cafile`. */
  requireCertificate?: boolean;
  port?: number;
}

/** Mosquitto with one TLS listener on 127.0.0.1 (url `mqtts://127.0.0.1:<port>`). Needs mosquitto: Aedes has no TLS listener here. */
export async function startTlsBroker(opts: TlsBrokerOptions): Promise<TestBroker> {
  const binary = findMosquitto();
  if (!binary) throw new Error('startTlsBroker needs mosquitto (skip with SKIP.mosquittoTls)');
  const port = opts.port ?? (await freePort());
  const tls = [
    `cafile ${opts.cafile}`,
    `certfile ${opts.certfile}`,
    `keyfile ${opts.keyfile}`,
    `require_certificate ${opts.requireCertificate ? 'true' : 'false'}`,
  ];
  return startMosquitto(binary, port, { scheme: 'mqtts', listenerLines: tls });
}

async function startMosquitto(
  binary: string,
  port: number,
  tls: { scheme: string; listenerLines: string[] } = { scheme: 'mqtt', listenerLines: [] },
): Promise<TestBroker> {
  const dir = mkdtempSync(join(tmpdir(), 'inceptiond-mosquitto-'));
  const conf = join(dir, 'mosquitto.conf');
  writeFileSync(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      ...tls.listenerLines,
      'allow_anonymous true',
      'persistence false',
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      '',
    ].join('\n'),
  );
  let child: ChildProcess | null = null;

  const launch = async () => {
    const proc = spawn(binary, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
    liveChildren.add(proc);
    let stderr = '';
    proc.stderr!.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-4000);
    });
    const exited = new Promise<never>((_, reject) => {
      proc.once('exit', (code, signal) => {
        liveChildren.delete(proc);
        reject(new Error(`mosquitto exited during startup (code ${code}, signal ${signal}): ${stderr.trim()}`));
      });
      proc.once('error', reject);
    });
    exited.catch(() => undefined);
    try {
      await Promise.race([waitForTcp(port, START_DEADLINE_MS), exited]);
    } catch (err) {
      proc.kill('SIGKILL');
      throw err;
    }
    child = proc;
  };

  const stop = async () => {
    const proc = child;
    child = null;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.kill('SIGKILL'); // abrupt, like a crashed or unplugged broker
    await exited;
    liveChildren.delete(proc);
  };

  await launch();
  return {
    kind: 'mosquitto',
    url: `${tls.scheme}://127.0.0.1:${port}`,
    port,
    stop: async () => {
      await stop();
    },
    restart: async () => {
      await stop();
      await launchWithRetry(launch);
    },
  };
}

async function startAedes(port: number): Promise<TestBroker> {
  const { Aedes } = await import('aedes');
  let running: { server: net.Server; sockets: Set<net.Socket>; close(): Promise<void> } | null = null;

  const launch = async () => {
    const broker = await Aedes.createBroker();
    const sockets = new Set<net.Socket>();
    const server = net.createServer((socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
      broker.handle(socket);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    running = {
      server,
      sockets,
      close: async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        for (const socket of sockets) socket.destroy();
        await closed;
        await new Promise<void>((resolve) => broker.close(() => resolve()));
      },
    };
  };
  const stop = async () => {
    const r = running;
    running = null;
    if (r) await r.close();
  };

  await launch();
  return {
    kind: 'aedes',
    url: `mqtt://127.0.0.1:${port}`,
    port,
    stop,
    restart: async () => {
      await stop();
      await launchWithRetry(launch);
    },
  };
}

/** The port can linger for a moment after the old listener closed; retry within a deadline. */
async function launchWithRetry(launch: () => Promise<void>): Promise<void> {
  const deadline = Date.now() + START_DEADLINE_MS;
  for (;;) {
    try {
      return await launch();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Resolves once a TCP connection to 127.0.0.1:port succeeds; polls until the deadline. */
export async function waitForTcp(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface CollectedMessage {
  topic: string;
  payload: Buffer;
  text: string;
  retain: boolean;
  qos: number;
}

export interface Collector {
  readonly messages: CollectedMessage[];
  /** Resolves with the first `n` messages (matching `filter` when given) once they arrived. */
  waitForCount(n: number, opts?: { timeoutMs?: number; filter?: (m: CollectedMessage) => boolean }): Promise<CollectedMessage[]>;
  /** Resolves with the first message satisfying the predicate (already received or future). */
  waitFor(predicate: (m: CollectedMessage) => boolean, timeoutMs?: number): Promise<CollectedMessage>;
  /** JSON-parsed payloads of the messages on one topic, in arrival order. */
  json<T = unknown>(topic?: string): T[];
  close(): Promise<void>;
}

/** Subscribes (SUBACK awaited) and records every message on `topicFilter`. */
export async function collect(url: string, topicFilter: string, options: IClientOptions = {}): Promise<Collector> {
  const client: MqttClient = await mqtt.connectAsync(url, {
    protocolVersion: 4,
    reconnectPeriod: 200,
    connectTimeout: 5_000,
    clientId: `collector-${Math.random().toString(16).slice(2, 10)}`,
    ...options,
  });
  const messages: CollectedMessage[] = [];
  const waiters = new Set<() => void>();
  client.on('message', (topic, payload, packet) => {
    messages.push({ topic, payload, text: payload.toString('utf8'), retain: packet.retain, qos: packet.qos });
    for (const w of [...waiters]) w();
  });
  await client.subscribeAsync(topicFilter, { qos: 1 });

  const waitUntil = <T>(check: () => T | undefined, timeoutMs: number, what: () => string): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const tryNow = () => {
        const value = check();
        if (value === undefined) return;
        clearTimeout(timer);
        waiters.delete(tryNow);
        resolve(value);
      };
      const timer = setTimeout(() => {
        waiters.delete(tryNow);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what()}`));
      }, timeoutMs);
      waiters.add(tryNow);
      tryNow();
    });

  return {
    messages,
    waitForCount(n, { timeoutMs = 15_000, filter } = {}) {
      return waitUntil(
        () => {
          const matching = filter ? messages.filter(filter) : messages;
          return matching.length >= n ? matching.slice(0, n) : undefined;
        },
        timeoutMs,
        () => `${n} messages on ${topicFilter} (got ${(filter ? messages.filter(filter) : messages).length})`,
      );
    },
    waitFor(predicate, timeoutMs = 15_000) {
      return waitUntil(
        () => messages.find(predicate),
        timeoutMs,
        () => `a matching message on ${topicFilter} (got ${messages.length})`,
      );
    },
    json<T>(topic?: string) {
      return messages.filter((m) => topic === undefined || m.topic === topic).map((m) => JSON.parse(m.text) as T);
    },
    async close() {
      await client.endAsync(true);
    },
  };
}

export interface TcpProxy {
  url: string;
  port: number;
  /** Connections accepted so far (a client that reconnects shows here). */
  readonly connections: number;
  /** Drops every connection and refuses new ones until restore(): a network outage without losing broker state. */
  cut(): void;
  /** Keeps connections open but forwards nothing (a black hole: no PUBACK ever arrives). */
  freeze(): void;
  restore(): void;
  close(): Promise<void>;
}

/** A TCP relay to 127.0.0.1:targetPort, so a test can cut one client's link while the broker and other clients stay up. */
export async function startProxy(targetPort: number): Promise<TcpProxy> {
  let isCut = false;
  let frozen = false;
  const held = new Set<net.Socket>();
  const pairs = new Set<[net.Socket, net.Socket]>();
  let connections = 0;
  const server = net.createServer((downstream) => {
    if (isCut) return void downstream.destroy();
    connections += 1;
    if (frozen) {
      held.add(downstream);
      downstream.on('error', () => undefined).on('close', () => held.delete(downstream));
      return;
    }
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair: [net.Socket, net.Socket] = [downstream, upstream];
    pairs.add(pair);
    const drop = () => {
      pairs.delete(pair);
      downstream.destroy();
      upstream.destroy();
    };
    downstream.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    downstream.pipe(upstream);
    upstream.pipe(downstream);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;
  const destroyAll = () => {
    for (const socket of held) socket.destroy();
    held.clear();
    for (const [a, b] of pairs) {
      a.destroy();
      b.destroy();
    }
    pairs.clear();
  };
  return {
    url: `mqtt://127.0.0.1:${port}`,
    port,
    get connections() {
      return connections;
    },
    cut() {
      isCut = true;
      destroyAll();
    },
    freeze() {
      frozen = true;
      for (const [a, b] of pairs) {
        a.unpipe(b);
        b.unpipe(a);
        a.pause();
        b.pause();
      }
    },
    restore() {
      isCut = false;
      frozen = false;
    },
    async close() {
      destroyAll();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface Requester {
  /** Publishes `body` (with a fresh `transaction`) on `<base>/request/<op>` and resolves with the response. */
  ask<T = Record<string, unknown>>(op: string, body?: Record<string, unknown>, timeoutMs?: number): Promise<T>;
  /** Every response received, in order. */
  readonly responses: CollectedMessage[];
  /** Publishes raw bytes on a request topic (no transaction: match the response yourself). */
  send(op: string, payload: string | Buffer): Promise<void>;
  close(): Promise<void>;
}

/** A client that makes requests to a daemon and matches the responses by transaction. */
export async function requester(url: string, base: string): Promise<Requester> {
  const responses = await collect(url, `${base}/response/+`);
  const client = await mqtt.connectAsync(url, { protocolVersion: 4, clientId: `requester-${Math.random().toString(16).slice(2, 10)}` });
  let next = 0;
  return {
    responses: responses.messages,
    async ask<T>(op: string, body: Record<string, unknown> = {}, timeoutMs = 15_000) {
      const transaction = `t${++next}-${Math.random().toString(16).slice(2, 6)}`;
      const answer = responses.waitFor((m) => {
        try {
          return m.topic === `${base}/response/${op}` && JSON.parse(m.text).transaction === transaction;
        } catch {
          return false;
        }
      }, timeoutMs);
      await client.publishAsync(`${base}/request/${op}`, JSON.stringify({ ...body, transaction }), { qos: 1 });
      return JSON.parse((await answer).text) as T;
    },
    async send(op, payload) {
      await client.publishAsync(`${base}/request/${op}`, payload, { qos: 1 });
    },
    async close() {
      await client.endAsync(true);
      await responses.close();
    },
  };
}
