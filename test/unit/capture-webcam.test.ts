import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { CaptureError, createSource, WEBCAM_FIELDS, WebcamSource, type WebcamSourceOptions } from '../../src/capture/index.js';
import { hasFswebcam, SKIP } from '../helpers/tools.js';
import { installFakeFswebcam, type FakeFswebcam, type FakeFswebcamMode } from '../helpers/fake-fswebcam/index.js';

const logger = pino({ level: 'silent' });

/**
 * True when the process has terminated. After SIGKILL, coreutils `timeout` kills its own process group,
 * itself included, so the dead child is re-parented to PID 1; an init that does not reap (as in some
 * containers) leaves it a zombie, which is terminated all the same.
 */
function isGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true; // vanished between the two checks
  }
}

/**
 * Whether `pid` is gone within `withinMs`. `timeout`'s SIGKILL goes to its process group in one call, so
 * `timeout` can be dead and reported before the kernel has finished tearing down fswebcam (one CI run saw
 * it still alive at the first look). No event tells the end of a process that is not our child: poll.
 */
async function goneWithin(pid: number, withinMs = 2000): Promise<boolean> {
  const until = Date.now() + withinMs;
  while (!isGone(pid)) {
    if (Date.now() > until) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
}

describe('webcam source (node-webcam → fake fswebcam)', () => {
  let root: string;
  let tmpDir: string;
  let fake: FakeFswebcam;
  let restorePath: () => void;

  beforeAll(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'capture-webcam-'));
    fake = await installFakeFswebcam(path.join(root, 'fake'));
    restorePath = fake.usePath();
  });
  afterAll(async () => {
    restorePath();
    await rm(root, { recursive: true, force: true });
  });
  beforeEach(async () => {
    fake.setMode('ok');
    await writeFile(fake.argvLog, '');
    tmpDir = await mkdtemp(path.join(root, 'shots-'));
  });
  afterEach(async () => {
    // No capture may leave its temporary file behind, whatever happened.
    expect(await readdir(tmpDir)).toEqual([]);
  });

  function options(overrides: Partial<WebcamSourceOptions> = {}): WebcamSourceOptions {
    return {
      id: 'cam',
      backend: 'webcam',
      intervalMs: 0,
      device: '/dev/video0',
      width: 640,
      height: 480,
      skipFrames: 2,
      jpegQuality: 80,
      timeoutMs: 5000,
      tmpDir,
      ...overrides,
    };
  }

  async function started(overrides: Partial<WebcamSourceOptions> = {}): Promise<WebcamSource> {
    const source = new WebcamSource(options(overrides), logger);
    await source.start();
    return source;
  }

  it('runs fswebcam with exactly the expected arguments and returns the JPEG it wrote', async () => {
    const source = await started({ device: '/dev/v4l/by-id/usb-046d_HD_Webcam_C615_1A2B-video-index0' });
    const frame = await source.next();
    expect(frame.data).toEqual(fake.image);
    expect(frame).toMatchObject({ sourceId: 'cam', captureSeq: 1 });
    const [call] = await fake.invocations();
    const output = call!.argv.at(-1)!;
    expect(call!.argv).toEqual([
      '-q',
      '-r',
      '640x480',
      '--jpeg',
      '80',
      '-d',
      '/dev/v4l/by-id/usb-046d_HD_Webcam_C615_1A2B-video-index0',
      '--no-banner',
      '--skip',
      '2',
      output,
    ]);
    expect(path.dirname(output)).toBe(tmpDir);
    expect(path.basename(output)).toMatch(/^inceptiond-cam-[0-9a-f-]{36}\.jpg$/);
    expect(source.stats()).toEqual({ captured: 1, failed: 0, dropped: 0 });
  });

  it('uses a new output file per capture and applies the configuration defaults for omitted options', async () => {
    const source = new WebcamSource(
      { id: 'cam', backend: 'webcam', intervalMs: 0, device: '/dev/video1', width: 320, height: 240, tmpDir },
      logger,
    );
    await source.start();
    await source.next();
    await source.next();
    const calls = await fake.invocations();
    const { jpegQuality, skipFrames } = WEBCAM_FIELDS;
    expect([jpegQuality.default, skipFrames.default]).toEqual([90, 2]);
    expect(calls.map((c) => c.argv.slice(0, -1))).toEqual([
      ['-q', '-r', '320x240', '--jpeg', '90', '-d', '/dev/video1', '--no-banner', '--skip', '2'],
      ['-q', '-r', '320x240', '--jpeg', '90', '-d', '/dev/video1', '--no-banner', '--skip', '2'],
    ]);
    expect(calls[0]!.argv.at(-1)).not.toBe(calls[1]!.argv.at(-1));
  });

  it('leaves out --skip when skipFrames is 0', async () => {
    const source = await started({ skipFrames: 0, jpegQuality: 1 });
    await source.next();
    const [call] = await fake.invocations();
    expect(call!.argv.slice(0, -1)).toEqual(['-q', '-r', '640x480', '--jpeg', '1', '-d', '/dev/video0', '--no-banner']);
  });

  const invalid: Array<[string, Partial<WebcamSourceOptions>]> = [
    ['a device with a shell command', { device: '/dev/video0; touch /tmp/pwned' }],
    ['a device with command substitution', { device: '/dev/$(touch /tmp/pwned)' }],
    ['a device with backticks', { device: '/dev/`id`' }],
    ['a device with a space', { device: '/dev/video0 -s x' }],
    ['a relative device', { device: 'video0' }],
    ['a device outside /dev', { device: '/dev/../etc/passwd' }],
    ['a width of zero', { width: 0 }],
    ['a fractional height', { height: 480.5 }],
    ['a width given as text', { width: '640; reboot' as unknown as number }],
    ['a JPEG quality above 95', { jpegQuality: 100 }],
    ['a JPEG quality of 0', { jpegQuality: 0 }],
    ['a width above 8192', { width: 8193 }],
    ['a height below 16', { height: 15 }],
    ['a timeout below 100 ms', { timeoutMs: 99 }],
    ['negative skipFrames', { skipFrames: -1 }],
    ['a timeout of NaN', { timeoutMs: Number.NaN }],
    ['a tmpDir with a semicolon', { tmpDir: '/tmp;touch /tmp/pwned' }],
    ['a tmpDir with a space', { tmpDir: '/tmp/my shots' }],
    ['an id with shell characters', { id: 'cam$(id)' }],
  ];
  it.each(invalid)('refuses %s at construction, before running anything', (_what, overrides) => {
    expect(() => createSource(options(overrides), logger)).toThrow(TypeError);
  });
  it('names the offending value in the error', async () => {
    expect(() => new WebcamSource(options({ device: '/dev/video0; touch /tmp/pwned' }), logger)).toThrow(
      /webcam\.device must be a plain device path.*\/dev\/video0; touch \/tmp\/pwned/,
    );
    expect(() => new WebcamSource(options({ jpegQuality: 100 }), logger)).toThrow(
      /webcam\.jpegQuality must be a whole number from 1 to 95, got 100/,
    );
    expect(await fake.invocations()).toEqual([]);
  });

  const failures: Array<[FakeFswebcamMode, RegExp]> = [
    ['no-device', /\(\/dev\/video0\): fswebcam failed: stat: No such file or directory$/],
    ['no-frames', /fswebcam failed: Timed out waiting for frame!; No frames captured\.$/],
    ['busy', /fswebcam failed: Error opening device: \/dev\/video0; open: Device or resource busy$/],
    ['palette', /fswebcam failed: Unable to find a compatible palette format\.$/],
    ['exit-1', /fswebcam exited with code 1: Error: capture failed with code 1$/],
    ['truncated', /fswebcam output rejected: the JPEG is truncated/],
    ['empty', /fswebcam output rejected: the image is empty/],
    ['not-jpeg', /fswebcam output rejected: the data is not a JPEG/],
    ['no-output', /fswebcam wrote no image$/],
  ];
  it.each(failures)('turns mode %s into a CaptureError with a clean message', async (mode, message) => {
    const source = await started();
    fake.setMode(mode);
    const error = await source.next().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CaptureError);
    expect((error as CaptureError).sourceId).toBe('cam');
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).not.toMatch(/\u001b|Command failed/);
    expect(source.stats()).toEqual({ captured: 0, failed: 1, dropped: 0 });
  });

  it('recovers when the camera comes back (mode switched while the source runs)', async () => {
    const source = await started();
    fake.setMode('busy');
    await expect(source.next()).rejects.toBeInstanceOf(CaptureError);
    fake.setMode('ok');
    await expect(source.next()).resolves.toMatchObject({ captureSeq: 1 });
    expect(source.stats()).toEqual({ captured: 1, failed: 1, dropped: 0 });
  });

  it('kills a hung fswebcam after timeoutMs and reports it', async () => {
    // Long enough for the fake (a Node process) to start and log its pid before it is killed.
    const source = await started({ timeoutMs: 1500 });
    fake.setMode('hang');
    await expect(source.next()).rejects.toThrow(/did not finish within 1500 ms and was killed/);
    const [call] = await fake.invocations();
    expect(call!.mode).toBe('hang');
    expect(await goneWithin(call!.pid)).toBe(true);
  });

  it('also kills a hung fswebcam that ignores SIGTERM', async () => {
    const source = await started({ timeoutMs: 1500 });
    fake.setMode('hang-ignore-term');
    await expect(source.next()).rejects.toThrow(/did not finish within 1500 ms and was killed/);
    const [call] = await fake.invocations();
    expect(call!.mode).toBe('hang-ignore-term');
    expect(await goneWithin(call!.pid)).toBe(true);
  });

  it('an aborted capture rejects at once; the next capture waits for the device and succeeds', async () => {
    const source = await started({ timeoutMs: 1500 });
    fake.setMode('hang');
    const controller = new AbortController();
    const aborted = source.next(controller.signal);
    await waitForInvocations(fake, 1);
    controller.abort(new Error('stop'));
    await expect(aborted).rejects.toThrow('stop');
    fake.setMode('ok');
    const frame = await source.next();
    expect(frame.data).toEqual(fake.image);
    const calls = await fake.invocations();
    expect(calls.map((c) => c.mode)).toEqual(['hang', 'ok']);
    expect(await goneWithin(calls[0]!.pid)).toBe(true);
  });

  it('removes capture files a crashed run left behind, and only its own', async () => {
    const stale = path.join(tmpDir, 'inceptiond-cam-0b7e7bd6-4a3b-4c6e-9d7a-2f1e3c4b5a69.jpg');
    const otherSource = path.join(tmpDir, 'inceptiond-cam-2-0b7e7bd6-4a3b-4c6e-9d7a-2f1e3c4b5a69.jpg');
    await writeFile(stale, 'x');
    await writeFile(otherSource, 'x');
    await started();
    expect(existsSync(stale)).toBe(false);
    expect(existsSync(otherSource)).toBe(true);
    await rm(otherSource);
  });

  it('resolves a relative tmpDir against the working directory', async () => {
    const source = new WebcamSource(options({ tmpDir: path.relative(process.cwd(), tmpDir) }), logger);
    await source.start();
    await source.next();
    const [call] = await fake.invocations();
    expect(path.dirname(call!.argv.at(-1)!)).toBe(tmpDir);
  });

  it('creates a missing tmpDir, and refuses one that is a file', async () => {
    // Its own folder: the suite checks that captures leave tmpDir empty.
    const scratch = await mkdtemp(path.join(os.tmpdir(), 'inceptiond-webcam-tmpdir-'));
    const missing = path.join(scratch, 'missing', 'nested');
    const created = new WebcamSource(options({ tmpDir: missing }), logger);
    await created.start();
    expect((await stat(missing)).isDirectory()).toBe(true);
    await created.stop();
    const file = path.join(scratch, 'a-file');
    await writeFile(file, '');
    const source = new WebcamSource(options({ tmpDir: file }), logger);
    await expect(source.start()).rejects.toThrow(/tmpDir .*a-file is not a writable directory/);
    await rm(scratch, { recursive: true, force: true });
  });
});

async function waitForInvocations(fake: FakeFswebcam, count: number): Promise<void> {
  await vi.waitFor(async () => expect((await fake.invocations()).length).toBeGreaterThanOrEqual(count), { timeout: 10_000 });
}

describe("webcam source with Debian's real fswebcam", () => {
  it('reports a missing device although fswebcam exits 0', async (ctx) => {
    ctx.skip(!hasFswebcam(), SKIP.fswebcam);
    const tmpDir = await mkdtemp(path.join(os.tmpdir(), 'capture-real-'));
    try {
      const source = new WebcamSource(
        {
          id: 'cam',
          backend: 'webcam',
          intervalMs: 0,
          device: '/dev/video97',
          width: 320,
          height: 240,
          skipFrames: 0,
          timeoutMs: 10_000,
          tmpDir,
        },
        logger,
      );
      await source.start();
      await expect(source.next()).rejects.toThrow(/\(\/dev\/video97\): fswebcam failed: .*No such file or directory/);
      expect(await readdir(tmpDir)).toEqual([]);
    } finally {
      await rm(tmpDir, { recursive: true, force: true });
    }
  });
});
