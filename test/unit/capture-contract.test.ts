/**
 * The FrameSource contract (capture/types.ts), run against every backend in the registry: files, webcam
 * (the fake fswebcam on PATH) and ffmpeg (lavfi testsrc). Each source is built the daemon's way, from a
 * loaded configuration through the registry, so a new backend gets this suite by adding one entry to
 * `backends` below. What only one backend does (ffmpeg restarts, fswebcam's failure modes, file order)
 * stays in its own test file.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import sharp from 'sharp';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  CAPTURE_BACKENDS,
  SourceStoppedError,
  sourceFromConfig,
  type CaptureBackend,
  type Frame,
  type FrameSource,
} from '../../src/capture/index.js';
import { loadConfig } from '../../src/config/index.js';
import { installFakeFswebcam } from '../helpers/fake-fswebcam/index.js';
import { testFfmpeg } from '../helpers/ffmpeg.js';

const logger = pino({ level: 'silent' });

let root: string;
const cleanups: Array<() => Promise<void> | void> = [];

beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'capture-contract-'));
});
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  await rm(root, { recursive: true, force: true });
});

/** Per backend: the `sources[0]` entry of a configuration that works in the test environment. */
const backends: Record<CaptureBackend, () => Promise<Record<string, unknown>>> = {
  async files() {
    const dir = await mkdtemp(path.join(root, 'images-'));
    for (let i = 0; i < 3; i++) {
      const image = await sharp({ create: { width: 32, height: 24, channels: 3, background: { r: 80 * i, g: 40, b: 200 } } })
        .jpeg()
        .toBuffer();
      await writeFile(path.join(dir, `frame${i}.jpg`), image);
    }
    return { files: { path: dir, loop: true } };
  },
  async webcam() {
    const fake = await installFakeFswebcam(path.join(root, 'fake-fswebcam'));
    cleanups.push(fake.usePath());
    return { webcam: { device: '/dev/video0', width: 320, height: 240, skipFrames: 0, timeoutMs: 5000 } };
  },
  async ffmpeg() {
    return { ffmpeg: { input: 'testsrc=size=160x120:rate=20', inputFormat: 'lavfi', path: testFfmpeg().path } };
  },
};

it('covers every backend in the registry', () => {
  expect(Object.keys(backends).sort()).toEqual([...CAPTURE_BACKENDS].sort());
});

describe.each(CAPTURE_BACKENDS)('FrameSource contract: %s', (backend) => {
  let make: () => FrameSource;
  const made: FrameSource[] = [];

  beforeAll(async () => {
    const entry = { id: 'contract', backend, ...(await backends[backend]()) };
    const runtimeDir = await mkdtemp(path.join(root, `run-${backend}-`));
    const { config } = loadConfig({ env: { INCEPTIOND_SOURCES: JSON.stringify([entry]), INCEPTIOND_RUNTIME_DIR: runtimeDir } });
    make = () => {
      const source = sourceFromConfig(config.sources[0]!, config, logger);
      made.push(source);
      return source;
    };
  });
  afterEach(async () => {
    await Promise.all(made.splice(0).map((source) => source.stop()));
  });

  async function expectImage(frame: Frame): Promise<void> {
    expect(frame.sourceId).toBe('contract');
    expect(frame.capturedAt).toBeInstanceOf(Date);
    const { info } = await sharp(frame.data).raw().toBuffer({ resolveWithObject: true });
    expect(info.width).toBeGreaterThan(0);
    expect(info.height).toBeGreaterThan(0);
  }

  it('names its id and backend', () => {
    const source = make();
    expect([source.id, source.backend]).toEqual(['contract', backend]);
  });

  it('start, next, stop: decodable images with increasing captureSeq, counted in stats()', async () => {
    const source = make();
    await source.start();
    const frames: Frame[] = [];
    for (let i = 0; i < 3; i++) frames.push(await source.next());
    for (const frame of frames) await expectImage(frame);
    const seqs = frames.map((f) => f.captureSeq);
    expect(seqs[0]).toBe(1);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(new Set(seqs).size).toBe(3);
    expect(source.stats()).toMatchObject({ captured: 3, failed: 0 });
    await source.stop();
  });

  it('next() before start() rejects', async () => {
    const source = make();
    await expect(source.next()).rejects.toThrow(/before start/);
  });

  it('a pending next() rejects with SourceStoppedError on stop(), and so does every later next()', async () => {
    const source = make();
    await source.start();
    const pending = expect(source.next()).rejects.toBeInstanceOf(SourceStoppedError);
    await source.stop();
    await pending;
    await expect(source.next()).rejects.toBeInstanceOf(SourceStoppedError);
  });

  it('an aborted next() rejects with the abort reason, and the source stays usable', async () => {
    const source = make();
    await source.start();
    const reason = new Error('shutting down');

    const controller = new AbortController();
    const pending = source.next(controller.signal);
    controller.abort(reason);
    await expect(pending).rejects.toBe(reason);

    await expect(source.next(AbortSignal.abort(reason))).rejects.toBe(reason);

    await expectImage(await source.next());
  });

  it('stop() is idempotent, also before start()', async () => {
    const never = make();
    await never.stop();
    await never.stop();

    const source = make();
    await source.start();
    await source.next();
    await source.stop();
    await source.stop();
    await expect(source.next()).rejects.toBeInstanceOf(SourceStoppedError);
  });

  it('start() after stop() delivers frames again, captureSeq going on', async () => {
    const source = make();
    await source.start();
    const before = await source.next();
    await source.stop();
    await source.start();
    const after = await source.next();
    await expectImage(after);
    expect(after.captureSeq).toBeGreaterThan(before.captureSeq);
  });
});
