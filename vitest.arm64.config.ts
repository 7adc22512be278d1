import { defineConfig } from 'vitest/config';

// `npm run test:arm64`: the daemon as linux-arm64 under qemu-user, compared with the same work on x86-64.
// Emulation is 100-300x slower than native and uses both cores, so one file, one test at a time.
export default defineConfig({
  test: {
    include: ['test/arm64/**/*.test.ts'],
    globalSetup: ['test/arm64/global-setup.ts'],
    fileParallelism: false,
    maxWorkers: 1,
    testTimeout: 600_000,
    hookTimeout: 600_000,
    teardownTimeout: 60_000,
  },
});
