/**
 * The optional tools some tests need, and the note a test gives when it skips for lack of one. The
 * suite passes on a machine with nothing but `npm ci`; what it could not test there is listed at the
 * end of the run (test/helpers/skip-reporter.ts), never hidden.
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { probeProvider } from '../../src/inference/index.js';
import { canStartUnder } from '../../src/ops/index.js';
import { findMosquitto } from './broker.js';
import { testSessionSettings, writeTinyModel } from './tiny-model.js';
import { which } from './which.js';

export const SKIP = {
  mqtt5: 'needs mosquitto: MQTT 5 (the fallback broker, Aedes, speaks MQTT 3.1.1 only)',
  sharedSubscriptions: 'needs mosquitto: shared subscriptions ($share/<group>/…), which the fallback broker, Aedes, lacks',
  fswebcam: "needs Debian's fswebcam (apt install fswebcam)",
  unixDgram: 'needs the optional native module unix-dgram (not built: no compiler?)',
  webgpu: 'needs a Vulkan driver WebGPU can use (no GPU here? Mesa >= 24 lavapipe: bookworm-backports mesa-vulkan-drivers)',
  webgpuBuild: "needs the WebGPU provider, which this platform's onnxruntime-node build lacks",
  systemdAnalyze: 'needs systemd-analyze (Debian package systemd)',
  jemalloc: "needs Debian's libjemalloc2 (apt install libjemalloc2): the allocator the unit and the image preload",
  chrt: "needs chrt (util-linux, in every Debian): it starts the daemon as systemd's CPUSchedulingPolicy= would",
  openssl: 'needs openssl (Debian package openssl) to make the test certificates',
  benchMosquitto: "needs mosquitto (Debian package mosquitto): the bench's broker where it is installed",
  mosquittoTls: 'needs mosquitto (Debian package mosquitto): a TLS listener (the fallback broker, Aedes, runs in-process without one)',
} as const;

/** The broker startBroker() will give: Mosquitto when installed, unless INCEPTIOND_TEST_BROKER=aedes. */
export function testBrokerKind(): 'mosquitto' | 'aedes' {
  return process.env.INCEPTIOND_TEST_BROKER !== 'aedes' && findMosquitto() ? 'mosquitto' : 'aedes';
}

export function hasFswebcam(): boolean {
  return which('fswebcam') !== null;
}

/** unix-dgram is an optionalDependency built by node-gyp: absent when the build was skipped or failed. */
export function loadUnixDgram<T>(): T | null {
  try {
    return createRequire(import.meta.url)('unix-dgram') as T;
  } catch {
    return null;
  }
}

let webGpu: Promise<{ compiled: boolean; usable: boolean; reason?: string }> | undefined;

/** Whether this machine's onnxruntime-node has WebGPU and a driver it can use (probed once, in a child process). */
export function webGpuStatus(): Promise<{ compiled: boolean; usable: boolean; reason?: string }> {
  webGpu ??= (async () => {
    const ort = createRequire(import.meta.url)('onnxruntime-node') as { listSupportedBackends(): Array<{ name: string }> };
    if (!ort.listSupportedBackends().some((b) => b.name === 'webgpu')) return { compiled: false, usable: false };
    const modelPath = await writeTinyModel({ size: 8, classes: 4, seed: 1 });
    const probe = await probeProvider(testSessionSettings(modelPath, { executionProviders: ['webgpu'] }), 'webgpu');
    return { compiled: true, usable: probe.ok, reason: probe.reason };
  })();
  return webGpu;
}

/** systemd's unit analyser, for checking the service file's hardening (Debian's systemd package). */
export function systemdAnalyze(): string | null {
  return which('systemd-analyze');
}

/** A Node process started with `env` (and PATH) alone: its exit status, /proc/self/maps, and what ld.so or a malloc printed. */
export function nodeProcessMaps(env: NodeJS.ProcessEnv): { status: number | null; maps: string; stderr: string } {
  const child = spawnSync(process.execPath, ['-e', "process.stdout.write(require('fs').readFileSync('/proc/self/maps', 'utf8'))"], {
    env: { PATH: process.env.PATH, ...env },
    encoding: 'utf8',
  });
  return { status: child.status, maps: child.stdout ?? '', stderr: child.stderr ?? '' };
}

let jemalloc: string | null | undefined;

/** Where ld.so finds libjemalloc.so.2 (Debian's libjemalloc2), as a preloaded Node process maps it; null without it. */
export function jemallocPath(): string | null {
  if (jemalloc !== undefined) return jemalloc;
  const { maps } = process.platform === 'linux' ? nodeProcessMaps({ LD_PRELOAD: 'libjemalloc.so.2' }) : { maps: '' };
  jemalloc = /\s(\/\S+\/libjemalloc\.so\.2)$/m.exec(maps)?.[1] ?? null;
  return jemalloc;
}

export function hasOpenssl(): boolean {
  return which('openssl') !== null;
}

let chrt: boolean | undefined;

/** Whether chrt(1) can start a process as SCHED_BATCH here (util-linux on Linux). */
export function hasChrt(): boolean {
  chrt ??= canStartUnder('batch');
  return chrt;
}
