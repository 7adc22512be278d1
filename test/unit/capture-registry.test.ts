/**
 * The capture backend registry: one row per backend gives the configuration its keys and the daemon its
 * sources; a source's retry delays reach both its CaptureRunner and ffmpeg's own restart backoff.
 */
import os from 'node:os';
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  CAPTURE_BACKEND_TABLE,
  CAPTURE_BACKENDS,
  COMMON_CAPTURE_FIELDS,
  CaptureRunner,
  FfmpegSource,
  createSource,
  runnerOptionsFor,
  sourceFromConfig,
  toSourceOptions,
  type FrameSource,
  type SourceOptions,
} from '../../src/capture/index.js';
import { buildSchema, loadConfig, type SourceConfig } from '../../src/config/index.js';
import { testFfmpeg } from '../helpers/ffmpeg.js';

const logger = pino({ level: 'silent' });

function sources(entries: unknown[], env: NodeJS.ProcessEnv = {}): SourceConfig[] {
  return loadConfig({ env: { INCEPTIOND_SOURCES: JSON.stringify(entries), INCEPTIOND_RUNTIME_DIR: os.tmpdir(), ...env } }).config.sources;
}

describe('the registry', () => {
  it("gives the configuration one group per backend, with the rows' keys, docs and defaults", () => {
    const capture = buildSchema({}).capture as Record<string, Record<string, { doc?: string; default?: unknown }>>;
    expect(Object.keys(capture)).toEqual(['backend', ...Object.keys(COMMON_CAPTURE_FIELDS), ...CAPTURE_BACKENDS]);
    for (const name of CAPTURE_BACKENDS) {
      const { fields } = CAPTURE_BACKEND_TABLE[name];
      expect(Object.keys(capture[name]!)).toEqual(Object.keys(fields));
      for (const [key, field] of Object.entries(fields)) {
        expect(capture[name]![key]).toMatchObject({ doc: field.doc, default: field.default });
      }
    }
    expect(capture.backend!.doc).toBe(
      'How frames are captured: files (images from disk), webcam (fswebcam, one process per frame) or ffmpeg (one long-running stream)',
    );
  });

  it("maps each backend's configured group to its options", () => {
    const [files, webcam, ffmpeg] = sources(
      [
        { id: 'a', backend: 'files', files: { path: '/srv/images' } },
        { id: 'b', backend: 'webcam', webcam: { device: '/dev/video2' } },
        { id: 'c', backend: 'ffmpeg', ffmpeg: { input: 'rtsp://cam/x', fps: 2.5 } },
      ],
      { INCEPTIOND_CAPTURE_INTERVAL_MS: '250' },
    );
    const context = { runtimeDir: '/run/inceptiond' };
    expect(toSourceOptions(files!, context)).toEqual({ backend: 'files', id: 'a', intervalMs: 250, path: '/srv/images', loop: true });
    expect(toSourceOptions(webcam!, context)).toEqual({
      backend: 'webcam',
      id: 'b',
      intervalMs: 250,
      device: '/dev/video2',
      width: 640,
      height: 480,
      skipFrames: 2,
      jpegQuality: 90,
      timeoutMs: 10_000,
      tmpDir: '/run/inceptiond',
    });
    expect(toSourceOptions(ffmpeg!, context)).toMatchObject({
      backend: 'ffmpeg',
      id: 'c',
      input: 'rtsp://cam/x',
      fps: 2.5,
      width: 0,
      ffmpegPath: '',
    });
  });

  it("builds each backend's FrameSource, and refuses a backend it does not have", () => {
    const built = sources([
      { id: 'a', backend: 'files', files: { path: '/srv/images' } },
      { id: 'b', backend: 'webcam' },
      { id: 'c', backend: 'ffmpeg', ffmpeg: { input: 'rtsp://cam/x' } },
    ]).map((s) => sourceFromConfig(s, { runtimeDir: os.tmpdir() }, logger));
    expect(built.map((s: FrameSource) => [s.id, s.backend])).toEqual([
      ['a', 'files'],
      ['b', 'webcam'],
      ['c', 'ffmpeg'],
    ]);
    expect(() => createSource({ backend: 'libcamera', id: 'x', intervalMs: 0 } as unknown as SourceOptions, logger)).toThrow(
      /unknown capture backend "libcamera" \(expected files, webcam, ffmpeg\)/,
    );
  });
});

describe("a source's retry delays", () => {
  let running: FrameSource | undefined;
  afterEach(async () => {
    await running?.stop();
    running = undefined;
  });

  const entries = [
    { id: 'door', backend: 'ffmpeg', intervalMs: 100, retryInitialMs: 20, retryMaxMs: 40, ffmpeg: { input: 'rtsp://cam/door' } },
    { id: 'yard', backend: 'ffmpeg', ffmpeg: { input: 'rtsp://cam/yard' } },
  ];
  const globalRetry = { INCEPTIOND_CAPTURE_RETRY_INITIAL_MS: '5000', INCEPTIOND_CAPTURE_RETRY_MAX_MS: '60000' };

  it('are its CaptureRunner options, not capture.retry*', () => {
    const [door, yard] = sources(entries, globalRetry);
    expect(runnerOptionsFor(door!, logger)).toEqual({ intervalMs: 100, retryInitialMs: 20, retryMaxMs: 40, logger });
    expect(runnerOptionsFor(yard!, logger)).toMatchObject({ intervalMs: 1000, retryInitialMs: 5000, retryMaxMs: 60_000 });
    // and a runner takes them as they are
    expect(
      () => new CaptureRunner(sourceFromConfig(door!, { runtimeDir: os.tmpdir() }, logger), runnerOptionsFor(door!, logger)),
    ).not.toThrow();
  });

  it('are the ffmpeg restart backoff', () => {
    const [door, yard] = sources(entries, globalRetry);
    expect(toSourceOptions(door!, { runtimeDir: '/tmp' })).toMatchObject({ restartInitialMs: 20, restartMaxMs: 40 });
    expect(toSourceOptions(yard!, { runtimeDir: '/tmp' })).toMatchObject({ restartInitialMs: 5000, restartMaxMs: 60_000 });
  });

  it("pace a failing ffmpeg's restarts (the default 1 s, 2 s, 4 s … would take 7 s for three)", async () => {
    const [door] = sources(
      [{ ...entries[0], ffmpeg: { input: 'nosuchfilter=x', inputFormat: 'lavfi', path: testFfmpeg().path } }],
      globalRetry,
    );
    const source = sourceFromConfig(door!, { runtimeDir: os.tmpdir() }, logger);
    running = source;
    expect(source).toBeInstanceOf(FfmpegSource);
    await source.start();
    await vi.waitFor(() => expect((source as FfmpegSource).restartCount).toBeGreaterThanOrEqual(3), { timeout: 3000, interval: 20 });
  });
});
