/**
 * A password planted in an RTSP camera URL (an ffmpeg source that cannot connect, so its errors quote the
 * URL) and in mqtt.url appears nowhere the daemon or the CLI writes: log lines, the retained status
 * topics, /status and /healthz, systemd STATUS= messages, doctor, config print and config check's error.
 * Each place must also show the URL masked (`user:***@`) where it shows it at all, so a test that never
 * met the URL cannot pass.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { collect, freePort, startBroker, type CollectedMessage, type Collector, type TestBroker } from '../helpers/broker.js';
import { runCli, startDaemon, writeConfig, type DaemonProcess } from '../helpers/daemon-process.js';
import { testFfmpeg } from '../helpers/ffmpeg.js';
import { loadUnixDgram, SKIP } from '../helpers/tools.js';
import { sharedModelEnv } from '../global-setup.js';

const PLANTED = 'S3cr3tPl4nt';
const MASKED = 'user:***@';
const base = 'secrets/dev';

interface DgramSocket {
  bind(p: string): void;
  on(e: 'message', cb: (b: Buffer) => void): void;
  close(): void;
}
const dgram = loadUnixDgram<{ createSocket(t: 'unix_dgram'): DgramSocket }>();

let broker: TestBroker;
let work: string;
let configFile: string;
let config: Record<string, unknown>;
let env: Record<string, string>;
let daemon: DaemonProcess;
let sub: Collector;
let systemd: DgramSocket | undefined;
const notifications: string[] = [];
const seen: { retained: CollectedMessage[]; status: string; healthz: string } = { retained: [], status: '', healthz: '' };

/** Resolves once `check` holds, re-checked whenever `onChange` fires (here: a datagram arrived). */
function whenTrue(check: () => boolean, what: string, subscribe: (wake: () => void) => void, timeoutMs = 30_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
    const wake = () => {
      if (!check()) return;
      clearTimeout(timer);
      resolve();
    };
    subscribe(wake);
    wake();
  });
}
const notifyWakers = new Set<() => void>();

beforeAll(async () => {
  broker = await startBroker();
  work = await mkdtemp(path.join(tmpdir(), 'inceptiond-secrets-'));
  const images = path.join(work, 'images');
  const { mkdir } = await import('node:fs/promises');
  await mkdir(images);
  await sharp({ create: { width: 160, height: 120, channels: 3, background: '#208040' } })
    .jpeg()
    .toFile(path.join(images, 'a.jpg'));
  const closedPort = await freePort(); // nothing listens there: ffmpeg's connection is refused, and its error quotes the URL
  config = {
    deviceId: 'secrets',
    stateDir: path.join(work, 'state'),
    capture: { ffmpeg: { path: testFfmpeg().path } },
    sources: [
      { id: 'camera', backend: 'files', intervalMs: 100, files: { path: images, loop: true } },
      { id: 'door', backend: 'ffmpeg', retryInitialMs: 200, ffmpeg: { input: `rtsp://user:${PLANTED}@127.0.0.1:${closedPort}/x` } },
    ],
    mqtt: {
      url: `mqtt://user:${PLANTED}@127.0.0.1:${broker.port}`,
      baseTopic: base,
      protocolVersion: broker.kind === 'mosquitto' ? 5 : 4,
    },
    http: { enabled: true, host: '127.0.0.1', port: 0 },
    metrics: { intervalSec: 0 },
    log: { level: 'debug' },
  };
  configFile = await writeConfig(work, config);
  env = sharedModelEnv(inject('modelCacheDir'));

  let notifySocket: string | undefined;
  if (dgram) {
    notifySocket = path.join(work, 'notify.sock');
    systemd = dgram.createSocket('unix_dgram');
    systemd.on('message', (b) => {
      notifications.push(b.toString());
      for (const wake of notifyWakers) wake();
    });
    systemd.bind(notifySocket);
  }

  sub = await collect(broker.url, `${base}/#`);
  daemon = startDaemon(['run', '-c', configFile], { ...env, ...(notifySocket ? { NOTIFY_SOCKET: notifySocket } : {}) });

  // Results flow (the camera works) and the door is degraded with its error: every place has something to say.
  await sub.waitFor((m) => m.topic === `${base}/camera/labels`);
  const doorError = (m: CollectedMessage) => m.topic === `${base}/door/status` && JSON.parse(m.text).state === 'degraded';
  await sub.waitFor(doorError);
  await sub.waitFor((m) => m.topic === `${base}/status` && JSON.parse(m.text).state === 'degraded');
  // What a client connecting now gets: the retained payloads.
  const late = await collect(broker.url, `${base}/+/status`);
  const lateDaemon = await collect(broker.url, `${base}/status`);
  seen.retained = [await late.waitFor((m) => m.retain && m.topic === `${base}/door/status`), await lateDaemon.waitFor((m) => m.retain)];
  await late.close();
  await lateDaemon.close();

  const http = (await daemon.waitForLog((l) => typeof l.http === 'string')).http as string;
  seen.status = await (await fetch(`${http}/status`)).text();
  seen.healthz = await (await fetch(`${http}/healthz`)).text();
  if (systemd) {
    await whenTrue(
      () => notifications.some((n) => n.includes('STATUS=degraded')),
      'a STATUS=degraded message',
      (wake) => notifyWakers.add(wake),
    );
  }
  // The error was logged at least once with the URL (masked): the ffmpeg failure and the broker URL.
  await daemon.waitForLog((l) => JSON.stringify(l).includes('rtsp://user:***@'));
  expect(await daemon.stop('SIGTERM')).toBe(0);
  await sub.waitFor((m) => m.topic === `${base}/status` && JSON.parse(m.text).state === 'stopped');
}, 120_000);

afterAll(async () => {
  await daemon?.stop('SIGKILL');
  systemd?.close();
  await sub?.close();
  await broker?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

const count = (text: string, needle: string) => text.split(needle).length - 1;

describe(`a planted password (${PLANTED}) in an RTSP URL and in mqtt.url`, () => {
  it('is in no log line (stdout and stderr), and the URLs are logged masked', () => {
    const logs = [...daemon.logs.map((l) => JSON.stringify(l)), ...daemon.otherOutput].join('\n');
    expect(count(logs, PLANTED)).toBe(0);
    expect(logs).toContain(`rtsp://${MASKED}127.0.0.1`);
    expect(logs).toContain(`mqtt://${MASKED}127.0.0.1:${broker.port}`);
  });

  it('is in no status payload on the broker (<base>/status and <base>/<source>/status, retained and live)', () => {
    const all = sub.messages.filter((m) => m.topic.endsWith('/status'));
    expect(all.length).toBeGreaterThan(0);
    for (const m of [...all, ...seen.retained]) expect(m.text, m.topic).not.toContain(PLANTED);
    const door = JSON.parse(seen.retained[0]!.text) as { state: string; error?: string };
    expect(door.state).toBe('degraded');
    expect(door.error).toContain(`rtsp://${MASKED}`);
    expect(JSON.parse(seen.retained[1]!.text).error).toContain(`rtsp://${MASKED}`);
  });

  it('is in neither /status nor /healthz', () => {
    for (const body of [seen.status, seen.healthz]) {
      expect(body).not.toContain(PLANTED);
      expect(body).toContain(`rtsp://${MASKED}`);
    }
  });

  it('is in no systemd STATUS= message', (ctx) => {
    ctx.skip(!dgram, SKIP.unixDgram);
    const text = notifications.join('\n');
    expect(notifications.some((n) => n.startsWith('READY=1'))).toBe(true);
    expect(count(text, PLANTED)).toBe(0);
    expect(text).toContain(`rtsp://${MASKED}`);
    expect(text).toContain(`mqtt://${MASKED}`);
  });

  it('is not in what doctor prints (text and --json, stdout and stderr)', async () => {
    const [plain, json] = await Promise.all([
      runCli(['doctor', '-c', configFile], env),
      runCli(['doctor', '--json', '-c', configFile], env),
    ]);
    for (const out of [plain, json]) {
      const text = out.stdout + out.stderr;
      expect(count(text, PLANTED)).toBe(0);
      expect(text).toContain(`rtsp://${MASKED}`); // the door's check fails, quoting its input
      expect(text).toContain(`mqtt://${MASKED}`); // the broker check passes, naming the URL
    }
    const checks = (JSON.parse(json.stdout) as { checks: Array<{ name: string; ok: boolean }> }).checks;
    expect(checks.find((c) => c.name === 'MQTT broker')?.ok).toBe(true);
  });

  it('is not in config print', async () => {
    const out = await runCli(['config', 'print', '-c', configFile]);
    expect(out.code).toBe(0);
    expect(count(out.stdout + out.stderr, PLANTED)).toBe(0);
    expect(out.stdout).toContain(`rtsp://${MASKED}`);
    expect(out.stdout).toContain(`mqtt://${MASKED}`);
  });

  it('is not in the error config check prints for a configuration invalid in another key, or in the URL key itself', async () => {
    const otherKey = await writeConfig(path.join(work, 'bad-qos'), { ...config, mqtt: { ...(config.mqtt as object), qos: 7 } });
    const urlKey = await writeConfig(path.join(work, 'bad-url'), {
      ...config,
      mqtt: { ...(config.mqtt as object), url: `ftp://user:${PLANTED}@127.0.0.1:21` },
    });
    const [a, b] = await Promise.all([runCli(['config', 'check', '-c', otherKey]), runCli(['config', 'check', '-c', urlKey])]);
    expect(a.code).toBe(78);
    expect(a.stderr).toContain('mqtt.qos');
    expect(b.code).toBe(78);
    expect(b.stderr).toContain(`ftp://${MASKED}`);
    for (const out of [a, b]) expect(count(out.stdout + out.stderr, PLANTED)).toBe(0);
  });
});
