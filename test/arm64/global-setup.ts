/**
 * Once per `npm run test:arm64`: compile dist when stale, fetch (or reuse from the cache) qemu-user, the
 * arm64 sysroot and the arm64 Node binary, refresh the arm64 copy of the project, and check that an arm64
 * program and its arm64 child run in the namespace. A step that cannot be done is reported as one line
 * naming the step and the reason, with which the first test fails (the others are then skipped).
 */
import type { TestProject } from 'vitest/node';
import { buildDistIfStale, root } from '../helpers/build.js';
import {
  Arm64SetupError,
  defaultCacheDir,
  prepareProject,
  prepareToolchain,
  probeNamespace,
  type ProbeResult,
  type Toolchain,
} from '../../scripts/arm64/toolchain.mjs';

const log = (msg: string) => process.stderr.write(`[arm64] ${msg}\n`);

export default async function setup(project: TestProject): Promise<void> {
  const t0 = performance.now();
  const cacheDir = defaultCacheDir();
  let tc: Toolchain;
  let projectDir: string;
  let probe: ProbeResult;
  try {
    try {
      if (buildDistIfStale()) log('dist/ was older than src/: compiled');
    } catch {
      throw new Arm64SetupError('npm run build', 'tsc -p tsconfig.build.json failed (see its output above)');
    }
    log(`cache: ${cacheDir} (INCEPTIOND_ARM64_CACHE overrides)`);
    tc = await prepareToolchain({ cacheDir, log });
    projectDir = await prepareProject({ root, cacheDir, log });
    probe = await probeNamespace(tc);
  } catch (err) {
    if (!(err instanceof Arm64SetupError)) throw err;
    // The first test fails with this line and the others are skipped: the step and the reason are the
    // whole story, so no stack.
    log(err.message);
    project.provide('arm64', { error: err.message });
    return;
  }
  log(
    `ready in ${((performance.now() - t0) / 1000).toFixed(1)} s: qemu ${tc.qemuVersion} (${tc.qemuPackage}, QEMU_CPU=${tc.qemuCpu}), ` +
      `node ${probe.node} ${probe.arch} (${probe.cpus} vCPU "${probe.cpuModel ?? '?'}", start ${probe.ms} ms), sysroot ${tc.sysrootPackages.join(' ')}`,
  );
  log(`arm64 project copy: ${projectDir}`);
  project.provide('arm64', { toolchain: tc, projectDir, probe });
}

declare module 'vitest' {
  export interface ProvidedContext {
    arm64: { toolchain: Toolchain; projectDir: string; probe: ProbeResult; error?: undefined } | { error: string };
  }
}
