import net from 'node:net';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { startEmbeddedBroker } from '../../src/publish/embedded-broker.js';
import { collect, freePort, startBroker } from '../helpers/broker.js';
import mqtt from 'mqtt';

const logger = pino({ level: 'silent' });
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('startEmbeddedBroker', () => {
  it('runs a broker clients can publish and subscribe through', async () => {
    const embedded = await startEmbeddedBroker({ host: '127.0.0.1', port: await freePort(), logger });
    expect(embedded).not.toBeNull();
    cleanups.push(() => embedded!.close());
    const sub = await collect(embedded!.url, 'x/#');
    cleanups.push(() => sub.close());
    const pub = await mqtt.connectAsync(embedded!.url, { protocolVersion: 4 });
    cleanups.push(() => pub.endAsync(true));
    await pub.publishAsync('x/y', 'hello', { qos: 1 });
    expect((await sub.waitFor((m) => m.topic === 'x/y')).text).toBe('hello');
  });

  it('returns null when an MQTT broker already listens on the port', async () => {
    const existing = await startBroker();
    cleanups.push(() => existing.stop());
    expect(await startEmbeddedBroker({ host: '127.0.0.1', port: existing.port, logger })).toBeNull();
  });

  it('fails clearly when the port is taken by something that is not MQTT', async () => {
    const port = await freePort();
    const sockets = new Set<net.Socket>();
    const other = net.createServer((s) => {
      sockets.add(s);
      s.end('HTTP/1.1 400 Bad Request\r\n\r\n');
    });
    await new Promise<void>((resolve) => other.listen(port, '127.0.0.1', resolve));
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          for (const s of sockets) s.destroy();
          other.close(() => resolve());
        }),
    );
    await expect(startEmbeddedBroker({ host: '127.0.0.1', port, logger })).rejects.toThrow(/in use by something that does not speak MQTT/);
  });
});
