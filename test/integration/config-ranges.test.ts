/**
 * `config check` refuses the capture values a backend would refuse at start, with exit 78 and the key,
 * for `capture.*` and `sources[i].*` alike: before, these passed the check and then made `run` exit 1,
 * which systemd restarts forever.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/daemon-process.js';

let work: string;

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'inceptiond-it-ranges-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

let files = 0;
async function check(config: unknown): Promise<{ code: number | string; stdout: string; stderr: string }> {
  const file = path.join(work, `config-${++files}.json`);
  await writeFile(file, JSON.stringify(config));
  return runCli(['config', 'check', '-c', file], { INCEPTIOND_CONFIG: undefined });
}

const ffmpeg = (group: object) => ({ backend: 'ffmpeg', ffmpeg: { input: 'rtsp://cam.local/stream', ...group } });

/** [what, the capture settings, the key below `capture.` or `sources[0].`, the message after the key] */
const cases: Array<[string, Record<string, unknown>, string, string]> = [
  ['webcam jpegQuality 100', { webcam: { jpegQuality: 100 } }, 'webcam.jpegQuality', '= 100: must be a whole number from 1 to 95'],
  ['webcam jpegQuality 96', { webcam: { jpegQuality: 96 } }, 'webcam.jpegQuality', '= 96: must be a whole number from 1 to 95'],
  ['webcam width 8193', { webcam: { width: 8193 } }, 'webcam.width', '= 8193: must be a whole number from 16 to 8192'],
  ['webcam height 15', { webcam: { height: 15 } }, 'webcam.height', '= 15: must be a whole number from 16 to 8192'],
  [
    'a webcam device that is not a plain /dev path',
    { webcam: { device: '/dev/video0 -s x' } },
    'webcam.device',
    '= "/dev/video0 -s x": must be a plain device path',
  ],
  ['a webcam device outside /dev', { webcam: { device: 'video0' } }, 'webcam.device', '= "video0": must be a plain device path'],
  ['ffmpeg fps 241', ffmpeg({ fps: 241 }), 'ffmpeg.fps', '= 241: must be 0 or a number from 0.01 to 240'],
  ['ffmpeg width without height', ffmpeg({ width: 640 }), 'ffmpeg.width', '= 640: needs height as well (set both, or neither)'],
  ['ffmpeg height without width', ffmpeg({ height: 480 }), 'ffmpeg.height', '= 480: needs width as well (set both, or neither)'],
  ['ffmpeg stallTimeoutMs 99', ffmpeg({ stallTimeoutMs: 99 }), 'ffmpeg.stallTimeoutMs', '= 99: must be a whole number from 100 to 600000'],
  [
    'a retry delay the ffmpeg restart cannot take',
    { retryMaxMs: 7_200_000 },
    'retryMaxMs',
    '= 7200000: must be a whole number from 0 to 3600000',
  ],
];

describe('config check on capture values a backend refuses', () => {
  it.each(cases)('refuses %s in capture with exit 78', async (_what, capture, key, message) => {
    const out = await check({ capture });
    expect(out.code).toBe(78);
    expect(out.stderr).toContain(`invalid configuration: capture.${key} ${message}`);
  });

  it.each(cases)('refuses %s in sources[i] with exit 78', async (_what, capture, key, message) => {
    const out = await check({
      sources: [
        { id: 'front', backend: 'files', files: { path: work } },
        { id: 'door', ...capture },
      ],
    });
    expect(out.code).toBe(78);
    expect(out.stderr).toContain(`invalid configuration: sources[1].${key} ${message}`);
  });

  it('accepts the edges of the ranges', async () => {
    const out = await check({
      capture: { webcam: { jpegQuality: 95, width: 16, height: 8192, device: '/dev/v4l/by-id/usb-046d_C615-video-index0' } },
      sources: [{ id: 'door', ...ffmpeg({ fps: 0.5, width: 16, height: 16, stallTimeoutMs: 100 }), retryMaxMs: 3_600_000 }],
    });
    expect(out.stderr).toBe('');
    expect(out.code).toBe(0);
  });
});
