import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The arm64 suite runs under emulation, on its own: `npm run test:arm64`.
    exclude: ['test/arm64/**', 'node_modules/**'],
    // The default reporter, then the list of tests skipped for a missing tool (mosquitto, fswebcam …).
    reporters: ['default', './test/helpers/skip-reporter.ts'],
    // Builds dist when stale and prepares the one model cache the integration daemons share.
    globalSetup: ['test/global-setup.ts'],
    // Integration tests start real brokers and daemon processes; two cores, so keep parallelism low.
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
