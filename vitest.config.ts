import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Builds dist when stale and prepares the one model cache the integration daemons share.
    globalSetup: ['test/global-setup.ts'],
    // Integration tests start real brokers and daemon processes; two cores, so keep parallelism low.
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
