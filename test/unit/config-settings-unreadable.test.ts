/**
 * A settings file the daemon may not read (EACCES) is left out with a warning instead of stopping the
 * start. Root reads any file, and the CI runs as root, so the permission error is produced by wrapping
 * readFileSync for that one file rather than by chmod.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../src/config/index.js';

vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  const readFileSync = ((file: Parameters<typeof fs.readFileSync>[0], ...rest: unknown[]) => {
    if (String(file).endsWith(`${path.sep}settings.json`)) {
      throw Object.assign(new Error(`EACCES: permission denied, open '${String(file)}'`), { code: 'EACCES' });
    }
    return (fs.readFileSync as (...args: unknown[]) => unknown)(file, ...rest);
  }) as typeof fs.readFileSync;
  return { ...fs, readFileSync, default: { ...fs, readFileSync } };
});

const dir = mkdtempSync(path.join(tmpdir(), 'inceptiond-settings-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('an unreadable settings file', () => {
  it('is left out with a warning naming it; the rest of the configuration loads', () => {
    writeFileSync(path.join(dir, 'settings.json'), '{"inference": {"topK": 2}}');
    const loaded = loadConfig({ env: { INCEPTIOND_STATE_DIR: dir }, settings: true });
    expect(loaded.config.inference.topK).toBe(5);
    expect(loaded.warnings).toEqual([expect.stringMatching(/settings\.json: EACCES: the values set requests kept there are left out/)]);
  });
});
