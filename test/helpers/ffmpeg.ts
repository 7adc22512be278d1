/**
 * The ffmpeg the tests run: `FFMPEG_PATH`, else `ffmpeg` on PATH, else the static build inside the
 * devDependency @ffmpeg-installer/ffmpeg (a 2018 ffmpeg 4.1 — enough for lavfi test sources and MJPEG,
 * and it makes `npm ci && npm test` work on a machine without ffmpeg). The daemon itself never uses the
 * npm build: it runs `capture.ffmpeg.path` or the system's ffmpeg.
 */
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { which } from './which.js';

export interface TestFfmpeg {
  path: string;
  /** Where it came from, for the suite's summary line. */
  origin: 'FFMPEG_PATH' | 'PATH' | '@ffmpeg-installer';
  /** First line of `ffmpeg -version`. */
  version: string;
}

let resolved: TestFfmpeg | undefined;

export function testFfmpeg(): TestFfmpeg {
  resolved ??= resolve();
  return resolved;
}

function resolve(): TestFfmpeg {
  const fromEnv = process.env.FFMPEG_PATH;
  if (fromEnv) return describe(fromEnv, 'FFMPEG_PATH');
  const onPath = which('ffmpeg');
  if (onPath) return describe(onPath, 'PATH');
  const installer = createRequire(import.meta.url)('@ffmpeg-installer/ffmpeg') as { path: string };
  return describe(installer.path, '@ffmpeg-installer');
}

function describe(path: string, origin: TestFfmpeg['origin']): TestFfmpeg {
  const out = execFileSync(path, ['-hide_banner', '-version'], { encoding: 'utf8' });
  return { path, origin, version: out.split('\n')[0]!.trim() };
}
