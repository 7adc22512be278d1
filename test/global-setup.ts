/**
 * Once per test run: compile src → dist when it is stale (integration tests run the real
 * `node dist/cli.js`), and prepare one model cache that every daemon started by a test shares, so the
 * Inception V2 is built (and quantized) once instead of once per daemon.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { findMosquitto } from './helpers/broker.js';
import { buildDistIfStale, root } from './helpers/build.js';
import { testFfmpeg } from './helpers/ffmpeg.js';
import { hasFswebcam, jemallocPath, loadUnixDgram, testBrokerKind, webGpuStatus } from './helpers/tools.js';

/** Settings every integration daemon uses for its model, so they all hit the same cache entry. */
export function sharedModelEnv(cacheDir: string): Record<string, string> {
  return {
    INCEPTIOND_MODEL_CACHE_DIR: cacheDir,
    INCEPTIOND_MODEL_CALIBRATION_PATH: path.join(root, 'models', 'samples'),
  };
}

/** One line saying which optional tools this run has, so a reader knows what the results cover. */
async function describeTools(): Promise<string> {
  const broker =
    testBrokerKind() === 'mosquitto'
      ? `mosquitto (${findMosquitto()}, MQTT 5 tests run)`
      : 'Aedes in-process (MQTT 3.1.1 only: the MQTT 5 tests are skipped; apt install mosquitto to run them)';
  const ffmpeg = testFfmpeg();
  const fswebcam = hasFswebcam()
    ? "Debian's fswebcam present"
    : "no fswebcam (the one test against Debian's real fswebcam is skipped; the others use a fake)";
  const dgram = loadUnixDgram() ? 'unix-dgram built' : 'unix-dgram not built (the systemd-notify fallback is tested instead)';
  const jemalloc = jemallocPath()
    ? 'libjemalloc2 present'
    : 'no libjemalloc2 (the tests of the daemon on the allocator the unit preloads are skipped; apt install libjemalloc2)';
  const gpu = await webGpuStatus();
  const webgpu = !gpu.compiled
    ? 'no WebGPU in this onnxruntime-node build (its tests are skipped)'
    : gpu.usable
      ? 'WebGPU usable'
      : `WebGPU unusable here: ${gpu.reason} (its tests are skipped; .ci/run installs Mesa's lavapipe)`;
  return `test tools: broker ${broker}; ffmpeg from ${ffmpeg.origin} (${ffmpeg.path}); ${fswebcam}; ${dgram}; ${jemalloc}; ${webgpu}`;
}

export default async function setup(project: TestProject): Promise<void> {
  process.stdout.write(`${await describeTools()}\n`);
  buildDistIfStale();
  // Kept between runs (under the git-ignored tmp/): the cache is keyed by model and options, so a stale
  // entry is never used, and a second run skips the build.
  const cacheDir = path.join(root, 'tmp', 'test-model-cache');
  mkdirSync(cacheDir, { recursive: true });
  const { loadConfig } = await import(path.join(root, 'dist', 'config', 'index.js'));
  const { prepareModel } = await import(path.join(root, 'dist', 'daemon', 'model-setup.js'));
  const { createSilentLogger } = await import(path.join(root, 'dist', 'ops', 'index.js'));
  const { config } = loadConfig({ env: { ...sharedModelEnv(cacheDir), INCEPTIOND_STATE_DIR: path.join(root, 'tmp', 'test-state') } });
  await prepareModel(config, createSilentLogger());
  project.provide('modelCacheDir', cacheDir);
}

declare module 'vitest' {
  export interface ProvidedContext {
    modelCacheDir: string;
  }
}
