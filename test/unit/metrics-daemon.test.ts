/**
 * The daemon's /metrics as an operator scrapes it: the standard process and Node.js names, the model it
 * runs, and the MQTT and frame metrics moving as Results are made and published (fake model, engine
 * and camera; real broker, outbox, MQTT client and HTTP server).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { Daemon } from '../../src/daemon/index.js';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { fakeCamera, fakeEngine, fakeModel } from '../helpers/fake-daemon.js';

let broker: TestBroker;
let work: string;
let jpeg: Buffer;

beforeAll(async () => {
  broker = await startBroker();
  work = await mkdtemp(path.join(tmpdir(), 'metrics-daemon-'));
  jpeg = await sharp({ create: { width: 16, height: 16, channels: 3, background: '#208040' } })
    .jpeg()
    .toBuffer();
});
afterAll(async () => {
  await broker?.stop();
  await rm(work, { recursive: true, force: true });
});

const value = (text: string, series: string) => {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
};

describe('daemon /metrics', () => {
  it('has the standard names, the model info, and metrics that move with the Results', async () => {
    const config = loadConfig({
      env: {
        INCEPTIOND_STATE_DIR: path.join(work, 'state'),
        INCEPTIOND_DEVICE_ID: 'metrics',
        INCEPTIOND_MQTT_URL: broker.url,
        INCEPTIOND_MQTT_BASE_TOPIC: 'md/metrics',
        INCEPTIOND_CAPTURE_BACKEND: 'files',
        INCEPTIOND_CAPTURE_FILES_PATH: work,
        INCEPTIOND_CAPTURE_INTERVAL_MS: '20',
        INCEPTIOND_HTTP_HOST: '127.0.0.1',
        INCEPTIOND_HTTP_PORT: '0',
        INCEPTIOND_METRICS_INTERVAL_SEC: '0',
      },
    }).config;
    const daemon = await Daemon.start(config, pino({ level: 'silent' }), {
      overrides: {
        prepareModel: async () => fakeModel,
        createEngine: async () => fakeEngine(),
        createSource: (s) => fakeCamera(s.id, () => jpeg),
      },
    });
    try {
      const url = `http://127.0.0.1:${daemon.info.httpPort}/metrics`;
      const scrape = async () => (await fetch(url)).text();
      let text = await scrape();
      for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes']) {
        expect(text, name).toMatch(new RegExp(`^${name} \\d`, 'm'));
      }
      expect(value(text, 'inceptiond_model_info{model="fake",precision="int8",provider="fake"}')).toBe(1);

      const deadline = Date.now() + 20_000;
      while ((value(text, 'inceptiond_mqtt_messages_published_total{kind="result"}') ?? 0) < 3) {
        if (Date.now() > deadline) throw new Error(`no Results acknowledged:\n${text}`);
        await new Promise((r) => setTimeout(r, 50));
        text = await scrape();
      }
      expect(value(text, 'inceptiond_mqtt_connected')).toBe(1);
      expect(value(text, 'inceptiond_frame_latency_seconds_count')).toBeGreaterThanOrEqual(3);
      expect(value(text, 'inceptiond_mqtt_messages_published_total{kind="other"}')).toBeGreaterThanOrEqual(1); // the status
      expect(value(text, 'inceptiond_outbox_bytes')).toBeGreaterThanOrEqual(0);
      expect(value(text, 'inceptiond_mqtt_reconnects_total')).toBe(0);
      expect(value(text, 'inceptiond_mqtt_connection_errors_total')).toBe(0);
    } finally {
      await daemon.stop('test done');
    }
  });
});
