/**
 * mqtt-packet (the encoder under mqtt.js and Aedes) fills a cache of 65 536 two-byte Buffers, one per
 * packet id, the first time it writes a packet: ~6 MB of the main thread's V8 heap (a third of the
 * daemon's live heap, found in a heap snapshot) to save one 2-byte allocation per QoS 1 publish. Turned
 * off before the first packet is written; `writeToStream.cacheNumbers` is the package's switch for it.
 * Resolved from mqtt's own location, so it is the instance mqtt.js uses (Aedes shares it when npm
 * deduplicates, as it does here).
 */
import { createRequire } from 'node:module';

const requireFromMqtt = createRequire(createRequire(import.meta.url).resolve('mqtt'));
const mqttPacket = requireFromMqtt('mqtt-packet') as { writeToStream: { cacheNumbers: boolean } };
mqttPacket.writeToStream.cacheNumbers = false;

/** Whether mqtt.js's packet encoder holds its number cache (false once this module is loaded). */
export function mqttNumberCacheEnabled(): boolean {
  return mqttPacket.writeToStream.cacheNumbers;
}
