/**
 * A fleet on one broker: two real daemon processes with different device ids (so different client ids,
 * topics and wills) and two consumers in one MQTT shared-subscription group on the README's filter
 * `inceptiond/+/+/labels`. Every Result of both daemons reaches the group exactly once: the union of
 * what the consumers got is each daemon's seq 1..N (N = the daemon's own Result count), no
 * (deviceId, seq) arrives twice, and both consumers got some (the broker really shared the load).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import sharp from 'sharp';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ResultPayload } from '../../src/publish/index.js';
import { collect, requester, startBroker, type Collector, type TestBroker } from '../helpers/broker.js';
import { startDaemon, writeConfig, type DaemonProcess } from '../helpers/daemon-process.js';
import { SKIP, testBrokerKind } from '../helpers/tools.js';
import { sharedModelEnv } from '../global-setup.js';

/** Images in the folder, and so Results per daemon (the files source does not loop). */
const IMAGES = 30;
const DEVICES = ['fleet-a', 'fleet-b'] as const;
const GROUP_FILTER = '$share/group1/inceptiond/+/+/labels';

let broker: TestBroker | undefined;
let work: string;
let imagesDir: string;
const daemons: DaemonProcess[] = [];
const cleanups: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'inceptiond-fleet-'));
  imagesDir = path.join(work, 'images');
  await mkdir(imagesDir);
  // Distinct scenes (hue and a moving disc), all valid: each file is one Result.
  for (let i = 0; i < IMAGES; i++) {
    const background = { r: (i * 53) % 256, g: (i * 97 + 40) % 256, b: (i * 151 + 80) % 256 };
    const jpeg = await sharp({ create: { width: 160, height: 120, channels: 3, background } })
      .composite([
        { input: Buffer.from(`<svg width="160" height="120"><circle cx="${20 + ((i * 7) % 120)}" cy="60" r="18" fill="#fff"/></svg>`) },
      ])
      .jpeg()
      .toBuffer();
    await writeFile(path.join(imagesDir, `frame-${String(i).padStart(3, '0')}.jpg`), jpeg);
  }
});

afterEach(async () => {
  await Promise.all(daemons.splice(0).map((d) => d.stop('SIGKILL')));
  for (const c of cleanups.splice(0)) await c();
});

afterAll(async () => {
  await broker?.stop();
  await rm(work, { recursive: true, force: true });
});

interface Received {
  deviceId: string;
  seq: number;
}

/** A consumer in the shared group; it also follows every status (not shared), used as an end-of-stream barrier. */
async function groupConsumer(url: string, name: string) {
  const client: MqttClient = await mqtt.connectAsync(url, {
    protocolVersion: 5,
    clientId: `consumer-${name}-${Math.random().toString(16).slice(2, 8)}`,
    reconnectPeriod: 0,
  });
  cleanups.push(() => client.endAsync(true));
  const results: Received[] = [];
  const stopped = new Set<string>();
  const waiters = new Set<() => void>();
  client.on('message', (topic, payload) => {
    const [, deviceId, third] = topic.split('/');
    if (third === 'status') {
      if ((JSON.parse(payload.toString()) as { state: string }).state === 'stopped') stopped.add(deviceId!);
    } else {
      results.push({ deviceId: deviceId!, seq: (JSON.parse(payload.toString()) as ResultPayload).seq });
    }
    for (const w of [...waiters]) w();
  });
  await client.subscribeAsync(GROUP_FILTER, { qos: 1 });
  await client.subscribeAsync('inceptiond/+/status', { qos: 1 });
  return {
    results,
    /** Resolves once this consumer has seen every device say `stopped` (live, after the Results it was given). */
    sawStopped(devices: readonly string[], timeoutMs = 20_000): Promise<void> {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (!devices.every((d) => stopped.has(d))) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`consumer ${name}: no "stopped" status from all of ${devices.join(', ')} (got ${[...stopped].join(', ')})`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
  };
}

async function watch(url: string, filter: string): Promise<Collector> {
  const c = await collect(url, filter);
  cleanups.push(() => c.close());
  return c;
}

async function resultsTotal(httpBase: string): Promise<number> {
  const text = await (await fetch(`${httpBase}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('inceptiond_results_total{') && l.includes('source="camera"'));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}

describe('a fleet of daemons and a shared-subscription consumer group', () => {
  it('delivers every Result of both daemons exactly once across the group', async (ctx) => {
    ctx.skip(testBrokerKind() !== 'mosquitto', SKIP.sharedSubscriptions);
    broker = await startBroker();
    const url = broker.url;

    // The consumers subscribe first: a group with no member gets nothing.
    const consumers = [await groupConsumer(url, 'one'), await groupConsumer(url, 'two')];
    const statuses = await watch(url, 'inceptiond/+/status');

    for (const deviceId of DEVICES) {
      const dir = path.join(work, deviceId);
      // No mqtt.baseTopic and no mqtt.clientId: both derive from deviceId, as the README says.
      const file = await writeConfig(dir, {
        deviceId,
        stateDir: path.join(dir, 'state'),
        capture: { backend: 'files', intervalMs: 0, files: { path: imagesDir, loop: false } },
        mqtt: { url, protocolVersion: 5 },
        http: { enabled: true, host: '127.0.0.1', port: 0 },
        metrics: { intervalSec: 0 },
      });
      daemons.push(startDaemon(['run', '-c', file], sharedModelEnv(inject('modelCacheDir'))));
    }

    // Each daemon works through the folder once; its source then says finished (the daemon stays online).
    const finished = (deviceId: string) =>
      statuses.waitFor((m) => {
        if (m.topic !== `inceptiond/${deviceId}/status`) return false;
        const s = JSON.parse(m.text) as { state: string; sources?: Record<string, { state: string }> };
        return s.state === 'online' && s.sources?.camera?.state === 'finished';
      }, 60_000);
    await Promise.all(DEVICES.map(finished));

    // The daemon's own count of the Results it produced; with one file per Result and none corrupt, N each.
    const produced = new Map<string, number>();
    for (const [i, deviceId] of DEVICES.entries()) {
      const http = (await daemons[i]!.waitForLog((l) => typeof l.http === 'string')).http as string;
      produced.set(deviceId, await resultsTotal(http));
    }
    expect(Object.fromEntries(produced)).toEqual(Object.fromEntries(DEVICES.map((d) => [d, IMAGES])));

    // Each device has its own retained status, client id, topics and will.
    const retained = await watch(url, 'inceptiond/+/status');
    const kept = await retained.waitForCount(2, { filter: (m) => m.retain });
    expect(kept.map((m) => m.topic).sort()).toEqual(DEVICES.map((d) => `inceptiond/${d}/status`));
    expect(kept.map((m) => (JSON.parse(m.text) as { state: string }).state)).toEqual(['online', 'online']);
    for (const deviceId of DEVICES) {
      const ask = await requester(url, `inceptiond/${deviceId}`);
      cleanups.push(() => ask.close());
      const info = await ask.ask<{ status: string; data: { deviceId: string; baseTopic: string; config: { mqtt: { clientId: string } } } }>(
        'info',
      );
      expect(info.status).toBe('ok');
      expect(info.data).toMatchObject({
        deviceId,
        baseTopic: `inceptiond/${deviceId}`,
        config: { mqtt: { clientId: `inceptiond-${deviceId}` } },
      });
    }

    // A clean stop publishes `stopped` after every Result was acknowledged; the broker keeps one
    // publisher's messages in order towards each subscriber, so once both consumers have seen both
    // daemons' `stopped`, every Result (and any repeat) has reached whichever consumer it was given to.
    expect(await Promise.all(daemons.map((d) => d.stop('SIGTERM')))).toEqual([0, 0]);
    await Promise.all(consumers.map((c) => c.sawStopped(DEVICES)));

    const all = consumers.flatMap((c) => c.results);
    const times = new Map<string, number>();
    for (const r of all) times.set(`${r.deviceId}:${r.seq}`, (times.get(`${r.deviceId}:${r.seq}`) ?? 0) + 1);
    const twice = [...times].filter(([, n]) => n > 1).map(([key, n]) => `${key} ×${n}`);
    expect(twice, 'Results received more than once across the group').toEqual([]);
    for (const deviceId of DEVICES) {
      const seqs = all.filter((r) => r.deviceId === deviceId).map((r) => r.seq);
      // seq runs 1..N with no gap: every Result the daemon produced reached the group.
      expect(
        seqs.sort((a, b) => a - b),
        `seqs of ${deviceId}`,
      ).toEqual(Array.from({ length: produced.get(deviceId)! }, (_, i) => i + 1));
    }
    // Both members got a share (Mosquitto hands a shared subscription's messages out in turn).
    const shares = consumers.map((c) => c.results.length);
    expect(Math.min(...shares), `shares ${shares.join(' + ')}`).toBeGreaterThan(0);
    expect(shares[0]! + shares[1]!).toBe(IMAGES * DEVICES.length);
  });
});
