/**
 * The real daemon with the webcam backend (node-webcam → fswebcam), where `fswebcam` is the fake from
 * test/helpers first on PATH: a missing device, a non-zero exit, no output file and a corrupt JPEG are
 * reported on the status topic while the process keeps running; the camera coming back recovers it.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { validateResult } from '../../src/publish/index.js';
import { collect, startBroker, type Collector, type TestBroker } from '../helpers/broker.js';
import { startDaemon, writeConfig, type DaemonProcess } from '../helpers/daemon-process.js';
import { installFakeFswebcam, type FakeFswebcam } from '../helpers/fake-fswebcam/index.js';
import { sharedModelEnv } from '../global-setup.js';

let broker: TestBroker;
let work: string;
let fake: FakeFswebcam;
let daemon: DaemonProcess | undefined;
let sub: Collector | undefined;

beforeAll(async () => {
  broker = await startBroker();
  work = await mkdtemp(path.join(tmpdir(), 'inceptiond-it-webcam-'));
  fake = await installFakeFswebcam(path.join(work, 'fake'), { mode: 'no-device' });
});

afterAll(async () => {
  await daemon?.stop('SIGKILL');
  await sub?.close();
  await broker?.stop();
  await rm(work, { recursive: true, force: true });
});

interface Status {
  state: string;
  error?: string;
  sources: Record<string, { state: string; error?: string }>;
}

describe('daemon with the webcam source (fake fswebcam)', () => {
  it('reports capture failures as degraded, keeps running, skips corrupt frames and recovers', async () => {
    const baseTopic = 'it/webcam';
    const status = `${baseTopic}/status`;
    const labels = `${baseTopic}/camera/labels`;
    const runtimeDir = path.join(work, 'run');
    const file = await writeConfig(path.join(work, 'cfg'), {
      deviceId: 'webcam',
      stateDir: path.join(work, 'state'),
      runtimeDir,
      capture: {
        backend: 'webcam',
        intervalMs: 100,
        retryInitialMs: 50,
        retryMaxMs: 200,
        webcam: { device: '/dev/video7', width: 320, height: 240, timeoutMs: 5_000 },
      },
      mqtt: { url: broker.url, baseTopic },
      http: { enabled: true, port: 0 },
      metrics: { intervalSec: 0 },
    });
    sub = await collect(broker.url, `${baseTopic}/#`);
    const isStatus = (pred: (s: Status) => boolean) => (m: { topic: string; text: string }) =>
      m.topic === status && pred(JSON.parse(m.text) as Status);

    daemon = startDaemon(['run', '-c', file], { ...sharedModelEnv(inject('modelCacheDir')), PATH: fake.pathWith(process.env.PATH) });

    // 1. No camera: degraded, with fswebcam's own words and the device in the error.
    const degraded = await sub.waitFor(isStatus((s) => s.state === 'degraded'));
    const s1 = JSON.parse(degraded.text) as Status;
    expect(s1.error).toContain('/dev/video7');
    expect(s1.sources.camera).toMatchObject({ state: 'degraded', error: expect.stringContaining('/dev/video7') });
    const argv = (await fake.invocations())[0]!.argv;
    expect(argv).toContain('/dev/video7');
    expect(argv.join(' ')).toContain('320x240');

    // The process stays up and answers on HTTP while the camera is missing. A missing camera is
    // retried (a handled failure): the process is live, so 200, and the body says degraded and why;
    // restarting it would not bring the camera back.
    const http = (await daemon.waitForLog((l) => typeof l.http === 'string')).http as string;
    const health = await fetch(`${http}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'degraded', state: 'degraded', error: expect.stringContaining('/dev/video7') });

    // 2. The camera appears: online again and Results flow. (Only a status after the degraded one: under
    // load the daemon may have said online before its first capture failed, with no source yet.)
    const messages = sub.messages;
    const seenBefore = messages.indexOf(degraded);
    fake.setMode('ok');
    const online = await sub.waitFor((m) => messages.indexOf(m) > seenBefore && isStatus((s) => s.state === 'online')(m));
    // The status says the present: the camera's old error is gone.
    expect(JSON.parse(online.text)).not.toHaveProperty('error');
    expect(JSON.parse(online.text).sources.camera).toEqual({ state: 'online', paused: false, since: expect.any(String) });
    const [result] = await sub.waitForCount(1, { filter: (m) => m.topic === labels });
    expect(validateResult(JSON.parse(result!.text)).ok).toBe(true);

    // 3. A truncated JPEG now and then is skipped and counted, not an outage.
    fake.setMode('truncated');
    const before = await droppedCorrupt(http);
    await waitUntil(async () => (await droppedCorrupt(http)) > before, 'a corrupt frame to be counted');
    fake.setMode('ok');
    const resultsSoFar = sub.messages.filter((m) => m.topic === labels).length;
    await sub.waitForCount(resultsSoFar + 1, { filter: (m) => m.topic === labels });

    // 4. fswebcam exiting non-zero, and exiting 0 without writing a file: degraded with the reason.
    const nextStatus = async (state: string): Promise<Status> => {
      const seen = sub!.messages.filter(isStatus((s) => s.state === state)).length;
      const all = await sub!.waitForCount(seen + 1, { filter: isStatus((s) => s.state === state) });
      return JSON.parse(all.at(-1)!.text) as Status;
    };
    fake.setMode('exit-1');
    expect((await nextStatus('degraded')).error).toMatch(/fswebcam/);
    fake.setMode('ok');
    await nextStatus('online');
    fake.setMode('no-output');
    expect((await nextStatus('degraded')).error).toContain('fswebcam wrote no image');

    // Every capture file was removed again (node-webcam never deletes them itself).
    expect(daemon.child.exitCode).toBeNull();
    expect(await daemon.stop('SIGTERM')).toBe(0);
    const left = await readdir(runtimeDir).catch(() => [] as string[]);
    expect(left.filter((f) => f.endsWith('.jpg'))).toEqual([]);
  });
});

async function droppedCorrupt(http: string): Promise<number> {
  const text = await (await fetch(`${http}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('inceptiond_frames_dropped_total{') && l.includes('reason="corrupt"'));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}

/** Polls an HTTP-observable condition (no event exists for a test to await). */
async function waitUntil(check: () => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
