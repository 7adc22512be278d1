import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import sharp from 'sharp';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { testFfmpeg } from '../helpers/ffmpeg.js';
import {
  buildFfmpegArgs,
  CaptureError,
  createSource,
  FfmpegSource,
  SourceStoppedError,
  type FfmpegSourceOptions,
  type Frame,
} from '../../src/capture/index.js';

const logger = pino({ level: 'silent' });
const ffmpeg = testFfmpeg();
const base = { id: 'cam', backend: 'ffmpeg', intervalMs: 0, stallTimeoutMs: 5000, ffmpegPath: ffmpeg.path } as const;

describe('buildFfmpegArgs', () => {
  it('reads a lavfi graph in real time and re-encodes to MJPEG on stdout', () => {
    expect(buildFfmpegArgs({ ...base, input: 'testsrc=size=320x240:rate=10', inputFormat: 'lavfi' })).toEqual([
      '-hide_banner',
      '-nostdin',
      '-nostats',
      '-loglevel',
      'error',
      '-re',
      '-f',
      'lavfi',
      '-i',
      'testsrc=size=320x240:rate=10',
      '-an',
      '-c:v',
      'mjpeg',
      '-q:v',
      '5',
      '-f',
      'image2pipe',
      'pipe:1',
    ]);
  });

  it('negotiates size and rate with a V4L2 camera and passes its MJPEG through', () => {
    const args = buildFfmpegArgs({ ...base, input: '/dev/video0', inputFormat: 'mjpeg', width: 640, height: 480, fps: 5 });
    expect(args.join(' ')).toBe(
      '-hide_banner -nostdin -nostats -loglevel error -f v4l2 -input_format mjpeg -video_size 640x480 -framerate 5 -i /dev/video0 -an -c:v copy -f mjpeg pipe:1',
    );
  });

  it('uses TCP for RTSP, filters size and rate, and puts extra input args before -i', () => {
    const args = buildFfmpegArgs({
      ...base,
      input: 'rtsp://cam.local/stream',
      width: 320,
      height: 240,
      fps: 2,
      extraInputArgs: ['-timeout', '5000000'],
    });
    expect(args.join(' ')).toBe(
      '-hide_banner -nostdin -nostats -loglevel error -rtsp_transport tcp -timeout 5000000 -i rtsp://cam.local/stream -an -vf fps=2,scale=320:240 -c:v mjpeg -q:v 5 -f image2pipe pipe:1',
    );
  });

  it('loops a file input unless told not to', () => {
    expect(buildFfmpegArgs({ ...base, input: 'clip.mp4' }).slice(5, 10)).toEqual(['-stream_loop', '-1', '-re', '-i', 'clip.mp4']);
    expect(buildFfmpegArgs({ ...base, input: 'clip.mp4', loop: false }).slice(5, 8)).toEqual(['-re', '-i', 'clip.mp4']);
  });
});

describe('FfmpegSource options', () => {
  const bad: Array<[string, Partial<FfmpegSourceOptions>]> = [
    ['an input ffmpeg would read as an option', { input: '-y' }],
    ['an empty input', { input: '' }],
    ['a format name with spaces', { input: 'x', inputFormat: 'mjpeg -y' }],
    ['width without height', { input: 'x', width: 320 }],
    ['height without width', { input: 'x', height: 240 }],
    ['a width above 8192', { input: 'x', width: 8193, height: 240 }],
    ['a rate above 240 fps', { input: 'x', fps: 241 }],
    ['a stall timeout below 100 ms', { input: 'x', stallTimeoutMs: 99 }],
    ['a fractional width', { input: 'x', width: 320.5, height: 240 }],
    ['a tiny stall timeout', { input: 'x', stallTimeoutMs: 0 }],
    ['extra args that are not strings', { input: 'x', extraInputArgs: [1 as unknown as string] }],
    ['a restart cap below the initial delay', { input: 'x', restartInitialMs: 5000, restartMaxMs: 100 }],
    ['an ffmpeg path with a newline', { input: 'x', ffmpegPath: '/usr/bin/ffmpeg\n-y' }],
  ];
  it.each(bad)('refuses %s', (_what, override) => {
    expect(() => createSource({ ...base, input: 'x', ...override } as FfmpegSourceOptions, logger)).toThrow(TypeError);
  });
});

describe('FfmpegSource unset values', () => {
  it('takes 0 and "" (the configuration\'s "not set") as absent', () => {
    const unset = new FfmpegSource(
      { ...base, input: 'rtsp://cam/x', inputFormat: '', width: 0, height: 0, fps: 0, ffmpegPath: '' },
      logger,
    );
    const absent = new FfmpegSource({ ...base, input: 'rtsp://cam/x', ffmpegPath: undefined }, logger);
    expect(unset.args).toEqual(absent.args);
    expect(unset.args).not.toContain('-vf');
  });

  it('names the key and the allowed range', () => {
    expect(() => new FfmpegSource({ ...base, input: 'x', fps: 500 }, logger)).toThrow(
      'source "cam": ffmpeg.fps must be 0 or a number from 0.01 to 240, got 500',
    );
    expect(() => new FfmpegSource({ ...base, input: 'x', width: 640 }, logger)).toThrow('ffmpeg.width needs height as well');
  });
});

describe('FfmpegSource with a real ffmpeg', () => {
  let source: FfmpegSource | undefined;
  afterEach(async () => {
    await source?.stop();
    source = undefined;
  });

  it('delivers decodable frames from a lavfi test source, each newer than the last', async () => {
    source = new FfmpegSource({ ...base, input: 'testsrc=size=320x240:rate=10', inputFormat: 'lavfi' }, logger);
    await source.start();
    const frames: Frame[] = [];
    for (let i = 0; i < 3; i++) frames.push(await source.next());
    for (const frame of frames) {
      const meta = await sharp(frame.data).metadata();
      expect(meta).toMatchObject({ format: 'jpeg', width: 320, height: 240 });
      const { info } = await sharp(frame.data).raw().toBuffer({ resolveWithObject: true });
      expect(info.size).toBe(320 * 240 * 3);
    }
    expect(frames.map((f) => f.captureSeq)).toEqual([1, 2, 3]);
    // testsrc draws a moving pattern and a counter: consecutive frames must differ.
    expect(frames[1]!.data.equals(frames[0]!.data)).toBe(false);
    expect(source.stats().captured).toBe(3);
  });

  it('applies width, height and fps through filters', async () => {
    source = new FfmpegSource(
      { ...base, input: 'testsrc=size=320x240:rate=10', inputFormat: 'lavfi', width: 64, height: 48, fps: 5 },
      logger,
    );
    await source.start();
    const meta = await sharp((await source.next()).data).metadata();
    expect([meta.width, meta.height]).toEqual([64, 48]);
  });

  it('keeps only the newest frame and counts the replaced ones as dropped', async () => {
    source = new FfmpegSource({ ...base, input: 'testsrc=size=160x120:rate=25', inputFormat: 'lavfi' }, logger);
    await source.start();
    await source.next();
    // ffmpeg goes on producing frames nobody asks for; each replaces the previous one.
    await vi.waitFor(() => expect(source!.stats().dropped).toBeGreaterThanOrEqual(3), { timeout: 10_000 });
    await source.next();
    const stats = source.stats();
    expect(stats.captured).toBe(2);
    expect(stats.dropped).toBeGreaterThanOrEqual(3);
  });

  it('restarts ffmpeg after it exits: a waiting next() gets a CaptureError, later calls get frames again', async () => {
    source = new FfmpegSource(
      { ...base, input: 'testsrc=size=160x120:rate=10:duration=0.5', inputFormat: 'lavfi', restartInitialMs: 50, restartMaxMs: 200 },
      logger,
    );
    await source.start();
    const outcomes: string[] = [];
    while (source.restartCount < 1 || outcomes.at(-1) !== 'frame') {
      try {
        await source.next();
        outcomes.push('frame');
      } catch (error) {
        expect(error).toBeInstanceOf(CaptureError);
        expect((error as Error).message).toMatch(/ffmpeg exited with code 0/);
        outcomes.push('error');
      }
    }
    expect(outcomes).toContain('error');
    expect(outcomes.at(-1)).toBe('frame');
    expect(source.stats().failed).toBeGreaterThanOrEqual(1);
  });

  it('reports ffmpeg errors with its last stderr line and keeps retrying', async () => {
    source = new FfmpegSource({ ...base, input: 'nosuchfilter=x', inputFormat: 'lavfi', restartInitialMs: 20, restartMaxMs: 40 }, logger);
    await source.start();
    await expect(source.next()).rejects.toThrow(/exited with code [1-9].*nosuchfilter|No such filter/i);
    await expect(source.next()).rejects.toBeInstanceOf(CaptureError);
    expect(source.restartCount).toBeGreaterThanOrEqual(1);
  });

  it('kills and restarts a stalled ffmpeg', async () => {
    source = new FfmpegSource(
      {
        ...base,
        input: 'testsrc=size=160x120:rate=10',
        inputFormat: 'lavfi',
        stallTimeoutMs: 1500,
        restartInitialMs: 20,
        restartMaxMs: 40,
      },
      logger,
    );
    await source.start();
    await source.next();
    const stalledPid = source.pid!;
    process.kill(stalledPid, 'SIGSTOP'); // alive but silent, like a camera that stopped streaming
    await expect(source.next()).rejects.toThrow(/delivered no frame for 1500 ms/);
    const frame = await source.next();
    expect(frame.captureSeq).toBe(2);
    expect(source.pid).not.toBe(stalledPid);
    expect(() => process.kill(stalledPid, 0)).toThrow(/ESRCH/);
  });

  it('stops promptly: the ffmpeg process is gone and a pending next() is rejected', async () => {
    source = new FfmpegSource({ ...base, input: 'testsrc=size=160x120:rate=10', inputFormat: 'lavfi' }, logger);
    await source.start();
    await source.next();
    const pid = source.pid!;
    const rejected = expect(source.next()).rejects.toBeInstanceOf(SourceStoppedError);
    await source.stop();
    await rejected;
    expect(() => process.kill(pid, 0)).toThrow(/ESRCH/);
    await expect(source.next()).rejects.toBeInstanceOf(SourceStoppedError);
    source = undefined;
  });

  it('replays a file input forever (loop) without restarting ffmpeg', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'capture-ffmpeg-'));
    try {
      const clip = path.join(dir, 'clip.mkv');
      // A 4-frame clip; the source must go on past its end.
      execFileSync(ffmpeg.path, ['-v', 'error', '-f', 'lavfi', '-i', 'testsrc=size=96x64:rate=20:duration=0.2', '-c:v', 'mjpeg', clip]);
      source = new FfmpegSource({ ...base, input: clip }, logger);
      await source.start();
      for (let i = 0; i < 10; i++) await source.next();
      expect(source.restartCount).toBe(0);
      expect(source.stats().failed).toBe(0);
    } finally {
      await source?.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('runs the configured ffmpeg executable, and names it when it cannot be run', async () => {
    source = new FfmpegSource(
      {
        ...base,
        input: 'testsrc=size=160x120:rate=10',
        inputFormat: 'lavfi',
        ffmpegPath: '/nonexistent/bin/ffmpeg',
        restartInitialMs: 20,
        restartMaxMs: 40,
      },
      logger,
    );
    await source.start();
    await expect(source.next()).rejects.toThrow(/cannot run \/nonexistent\/bin\/ffmpeg: .*ENOENT/);
    await expect(source.next()).rejects.toBeInstanceOf(CaptureError); // retried, still failing
    expect(source.restartCount).toBeGreaterThanOrEqual(1);
  });
});
