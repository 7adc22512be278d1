/**
 * A deprecated (run-together) environment name reaches the daemon's log as a warning naming the new
 * name: under systemd that is the only place a user would see it.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDaemon } from '../helpers/daemon-process.js';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'inceptiond-it-warnings-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('run with a deprecated environment name', () => {
  it('logs a warning naming the new name on its JSON log', async () => {
    const daemon = startDaemon(['run'], {
      INCEPTIOND_CONFIG: undefined,
      INCEPTIOND_STATE_DIR: path.join(work, 'state'),
      INCEPTIOND_CAPTURE_INTERVALMS: '750',
      INCEPTIOND_LOG_LEVEL: 'debug',
    });
    try {
      const warning = await daemon.waitForLog((l) => l.level === 40 && /INCEPTIOND_CAPTURE_INTERVALMS/.test(l.msg), 30_000);
      expect(warning.msg).toContain('INCEPTIOND_CAPTURE_INTERVAL_MS');
      expect(daemon.otherOutput).toEqual([]);
    } finally {
      await daemon.stop('SIGTERM');
    }
  });
});
