/**
 * mqtt-packet's number cache (65 536 Buffers, ~6 MB of heap) stays unbuilt once the publish folder is
 * loaded, and QoS 1 traffic still flows with its packet ids generated per packet.
 */
import { createRequire } from 'node:module';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mqttNumberCacheEnabled } from '../../src/publish/index.js';
import { collect, startBroker, type TestBroker } from '../helpers/broker.js';

const requireFromMqtt = createRequire(createRequire(import.meta.url).resolve('mqtt'));
const numbers = requireFromMqtt('mqtt-packet/numbers.js') as { cache: Record<number, Buffer> };

let broker: TestBroker;
beforeAll(async () => {
  broker = await startBroker();
});
afterAll(async () => {
  await broker?.stop();
});

describe('mqtt-packet number cache', () => {
  it('is off, stays empty through QoS 1 publishes, and the messages arrive', async () => {
    expect(mqttNumberCacheEnabled()).toBe(false);
    const collector = await collect(broker.url, 'numbers/#');
    const client = await mqtt.connectAsync(broker.url, { protocolVersion: 4, clientId: 'numbers-test' });
    try {
      for (let i = 0; i < 5; i++) await client.publishAsync(`numbers/${i}`, String(i), { qos: 1 });
      const got = await collector.waitForCount(5);
      expect(got.map((m) => m.text).sort()).toEqual(['0', '1', '2', '3', '4']);
      expect(Object.keys(numbers.cache)).toHaveLength(0);
    } finally {
      await client.endAsync();
      await collector.close();
    }
  });
});
