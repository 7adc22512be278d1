/**
 * The configuration accepts exactly the capture values the backends accept: a value `config check`
 * passes must not make `run` exit 1 (and restart forever under systemd). The ranges come from the
 * registry's field descriptions; these tests hold both sides to them, key by key.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CAPTURE_BACKEND_TABLE,
  CAPTURE_BACKENDS,
  COMMON_CAPTURE_FIELDS,
  CaptureRunner,
  runnerOptionsFor,
  sourceFromConfig,
  type CaptureBackend,
  type Field,
} from '../../src/capture/index.js';
import { ConfigError, loadConfig, type SourceConfig } from '../../src/config/index.js';

const logger = pino({ level: 'silent' });
const runtimeDir = os.tmpdir();

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'config-ranges-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function configError(input: { env?: NodeJS.ProcessEnv; sources?: unknown[]; file?: string }): ConfigError {
  const env: NodeJS.ProcessEnv = { INCEPTIOND_RUNTIME_DIR: runtimeDir, ...input.env };
  if (input.sources) env.INCEPTIOND_SOURCES = JSON.stringify(input.sources);
  try {
    loadConfig({ env, file: input.file });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('the configuration was accepted');
}

describe('capture ranges refused by config validation, naming the key', () => {
  it.each([
    [{ webcam: { jpegQuality: 100 } }, 'capture.webcam.jpegQuality = 100: must be a whole number from 1 to 95'],
    [{ webcam: { jpegQuality: 96 } }, 'capture.webcam.jpegQuality = 96: must be a whole number from 1 to 95'],
    [{ webcam: { width: 8193 } }, 'capture.webcam.width = 8193: must be a whole number from 16 to 8192'],
    [{ webcam: { height: 8 } }, 'capture.webcam.height = 8: must be a whole number from 16 to 8192'],
    [{ webcam: { timeoutMs: 50 } }, 'capture.webcam.timeoutMs = 50: must be a whole number from 100 to 600000'],
    [
      { webcam: { device: 'video0' } },
      'capture.webcam.device = "video0": must be a plain device path such as /dev/video0 or /dev/v4l/by-id/…',
    ],
    [
      { webcam: { device: '/dev/video0; reboot' } },
      'capture.webcam.device = "/dev/video0; reboot": must be a plain device path such as /dev/video0 or /dev/v4l/by-id/…',
    ],
    [{ ffmpeg: { fps: 241 } }, 'capture.ffmpeg.fps = 241: must be 0 or a number from 0.01 to 240'],
    [{ ffmpeg: { width: 8 } }, 'capture.ffmpeg.width = 8: must be 0 or a whole number from 16 to 8192'],
    [{ ffmpeg: { stallTimeoutMs: 99 } }, 'capture.ffmpeg.stallTimeoutMs = 99: must be a whole number from 100 to 600000'],
    [
      { ffmpeg: { input: '-y' } },
      'capture.ffmpeg.input = "-y": must be a device, URL or file, not starting with "-" (ffmpeg would read it as an option)',
    ],
    [{ ffmpeg: { inputFormat: 'mjpeg -y' } }, 'capture.ffmpeg.inputFormat = "mjpeg -y": must be a format name such as mjpeg or lavfi'],
    [{ ffmpeg: { path: 'ffmpeg\n-y' } }, 'capture.ffmpeg.path = "ffmpeg\\n-y": must be a file path or a command name'],
    [{ retryMaxMs: 3_600_001 }, 'capture.retryMaxMs = 3600001: must be a whole number from 0 to 3600000'],
    [{ intervalMs: 2 ** 31 }, 'capture.intervalMs = 2147483648: must be a whole number from 0 to 2147483647'],
  ])('%j', async (capture, message) => {
    const file = path.join(dir, 'config.json');
    await writeFile(file, JSON.stringify({ capture }, null, 2));
    const err = configError({ file });
    // Pretty-printed, a key d levels deep is on line d + 1, indented by 2(d - 1).
    const depth = message.split(' ')[0]!.split('.').length;
    expect(err.message).toBe(`invalid configuration: ${message} (in ${file}, line ${depth + 1}, column ${2 * depth + 1})`);
  });

  it('names the environment variable a value came from', () => {
    expect(configError({ env: { INCEPTIOND_CAPTURE_WEBCAM_JPEG_QUALITY: '100' } }).message).toBe(
      'invalid configuration: capture.webcam.jpegQuality = 100 (from INCEPTIOND_CAPTURE_WEBCAM_JPEG_QUALITY): must be a whole number from 1 to 95',
    );
    expect(configError({ env: { INCEPTIOND_CAPTURE_FFMPEG_FPS: 'fast' } }).message).toBe(
      'invalid configuration: capture.ffmpeg.fps = "fast" (from INCEPTIOND_CAPTURE_FFMPEG_FPS): must be 0 or a number from 0.01 to 240',
    );
  });

  it('the same for sources[i]', () => {
    const cases: Array<[unknown, string]> = [
      [{ webcam: { jpegQuality: 100 } }, 'sources[0].webcam.jpegQuality = 100: must be a whole number from 1 to 95'],
      [{ webcam: { width: 10_000 } }, 'sources[0].webcam.width = 10000: must be a whole number from 16 to 8192'],
      [
        { webcam: { device: '/dev/../etc/passwd' } },
        'sources[0].webcam.device = "/dev/../etc/passwd": must be a plain device path such as /dev/video0 or /dev/v4l/by-id/…',
      ],
      [
        { backend: 'ffmpeg', ffmpeg: { input: 'rtsp://cam', fps: 500 } },
        'sources[0].ffmpeg.fps = 500: must be 0 or a number from 0.01 to 240',
      ],
      [
        { backend: 'ffmpeg', ffmpeg: { input: 'rtsp://cam', stallTimeoutMs: 1 } },
        'sources[0].ffmpeg.stallTimeoutMs = 1: must be a whole number from 100 to 600000',
      ],
      [{ retryInitialMs: 4_000_000 }, 'sources[0].retryInitialMs = 4000000: must be a whole number from 0 to 3600000'],
    ];
    for (const [entry, message] of cases) {
      const err = configError({ sources: [{ id: 'door', ...(entry as object) }] });
      expect(err.message).toBe(`invalid configuration: ${message}`);
    }
  });

  it('refuses ffmpeg width without height and the reverse, when the backend is ffmpeg', () => {
    expect(
      configError({
        env: {
          INCEPTIOND_CAPTURE_BACKEND: 'ffmpeg',
          INCEPTIOND_CAPTURE_FFMPEG_INPUT: 'rtsp://cam',
          INCEPTIOND_CAPTURE_FFMPEG_WIDTH: '640',
        },
      }).message,
    ).toBe('invalid configuration: capture.ffmpeg.width = 640: needs height as well (set both, or neither)');
    expect(configError({ sources: [{ id: 'door', backend: 'ffmpeg', ffmpeg: { input: 'rtsp://cam', height: 480 } }] }).message).toBe(
      'invalid configuration: sources[0].ffmpeg.height = 480: needs width as well (set both, or neither)',
    );
    // Unused by a webcam source, so not its problem.
    expect(() => loadConfig({ env: { INCEPTIOND_CAPTURE_FFMPEG_WIDTH: '640' } })).not.toThrow();
  });

  it('accepts the edges of every range, and fractional ffmpeg rates', () => {
    const { config } = loadConfig({
      env: {
        INCEPTIOND_CAPTURE_WEBCAM_JPEG_QUALITY: '95',
        INCEPTIOND_CAPTURE_WEBCAM_WIDTH: '16',
        INCEPTIOND_CAPTURE_WEBCAM_HEIGHT: '8192',
        INCEPTIOND_CAPTURE_WEBCAM_TIMEOUT_MS: '100',
        INCEPTIOND_CAPTURE_FFMPEG_FPS: '0.5',
        INCEPTIOND_CAPTURE_FFMPEG_STALL_TIMEOUT_MS: '100',
        INCEPTIOND_CAPTURE_RETRY_MAX_MS: '3600000',
      },
    });
    expect(config.capture.webcam).toMatchObject({ jpegQuality: 95, width: 16, height: 8192, timeoutMs: 100 });
    expect(config.capture.ffmpeg.fps).toBe(0.5);
  });
});

/**
 * Values around each numeric field's range, and known-bad strings: the configuration and the backend
 * must give the same answer for every one, so the two cannot drift apart.
 */
function probes(field: Field): unknown[] {
  if (field.kind === 'integer')
    return [field.min - 1, field.min, field.max, field.max + 1, field.min + 0.5, ...(field.unset === undefined ? [] : [field.unset])];
  if (field.kind === 'number')
    return [field.min / 2, field.min, field.max, field.max + 0.5, ...(field.unset === undefined ? [] : [field.unset])];
  if (field.kind === 'string') return ['', ' ', '-x', 'a b', 'x\ny', '/dev/video0', '/dev/../x', 'rtsp://cam/1', 'mjpeg'];
  return [];
}

/** A working entry for each backend, with every pair-wise key set, so one changed key is the only problem. */
const BASE: Record<CaptureBackend, Record<string, unknown>> = {
  files: { files: { path: '/srv/images' } },
  webcam: {},
  ffmpeg: { ffmpeg: { input: 'rtsp://cam/1', width: 320, height: 240 } },
};

function configAccepts(entry: Record<string, unknown>): SourceConfig | undefined {
  try {
    return loadConfig({ env: { INCEPTIOND_SOURCES: JSON.stringify([entry]), INCEPTIOND_RUNTIME_DIR: runtimeDir } }).config.sources[0];
  } catch (err) {
    if (err instanceof ConfigError) return undefined;
    throw err;
  }
}

function backendAccepts(source: SourceConfig): boolean {
  try {
    new CaptureRunner(sourceFromConfig(source, { runtimeDir }, logger), runnerOptionsFor(source, logger));
    return true;
  } catch (err) {
    if (err instanceof TypeError) return false;
    throw err;
  }
}

describe('configuration and backends agree on every capture value', () => {
  const good = (backend: CaptureBackend) => configAccepts({ id: 'probe', backend, ...BASE[backend] })!;

  for (const backend of CAPTURE_BACKENDS) {
    const { fields } = CAPTURE_BACKEND_TABLE[backend];
    for (const [key, field] of Object.entries(fields)) {
      for (const value of probes(field)) {
        it(`${backend}.${key} = ${JSON.stringify(value)}`, () => {
          const base = good(backend);
          const group = { ...(base[backend] as Record<string, unknown>), [key]: value };
          const config = configAccepts({ id: 'probe', backend, ...BASE[backend], [backend]: group });
          expect(backendAccepts({ ...base, [backend]: group } as SourceConfig)).toBe(config !== undefined);
        });
      }
    }
  }

  for (const [key, field] of Object.entries(COMMON_CAPTURE_FIELDS)) {
    for (const value of probes(field)) {
      it.each(CAPTURE_BACKENDS)(`${key} = ${JSON.stringify(value)} (%s)`, (backend) => {
        const config = configAccepts({
          id: 'probe',
          backend,
          ...BASE[backend],
          [key]: value,
          ...(key === 'retryInitialMs' ? { retryMaxMs: 3_600_000 } : {}),
        });
        const source = { ...good(backend), [key]: value, ...(key === 'retryInitialMs' ? { retryMaxMs: 3_600_000 } : {}) } as SourceConfig;
        expect(backendAccepts(source)).toBe(config !== undefined);
      });
    }
  }
});

describe('source ids', () => {
  it.each(['camera', '-door', '_yard', 'a.b', 'a/b', 'a b', 'x'.repeat(64), 'x'.repeat(65)])(
    '%j: the configuration and the backends agree',
    (id) => {
      const config = configAccepts({ id, backend: 'files', files: { path: '/srv/images' } });
      const source = { ...configAccepts({ id: 'probe', backend: 'files', files: { path: '/srv/images' } })!, id };
      expect(backendAccepts(source)).toBe(config !== undefined);
    },
  );
});

describe('runtimeDir with the webcam backend', () => {
  it('refuses a folder fswebcam cannot be given safely, naming runtimeDir; other backends do not care', async () => {
    const { loadConfig, ConfigError } = await import('../../src/config/index.js');
    const load = (env: NodeJS.ProcessEnv) => loadConfig({ env: { INCEPTIOND_STATE_DIR: '/tmp/x', ...env } }).config;
    let err: unknown;
    try {
      load({ INCEPTIOND_CAPTURE_BACKEND: 'webcam', INCEPTIOND_RUNTIME_DIR: '/tmp/my captures' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(
      /runtimeDir = "\/tmp\/my captures" \(from INCEPTIOND_RUNTIME_DIR\): must be a path of letters, digits and "\._\+-\/" only when a source uses the webcam backend/,
    );
    expect(
      load({ INCEPTIOND_CAPTURE_BACKEND: 'files', INCEPTIOND_CAPTURE_FILES_PATH: '/tmp', INCEPTIOND_RUNTIME_DIR: '/tmp/my captures' })
        .runtimeDir,
    ).toBe('/tmp/my captures');
  });
});
