// The model-setup child (src/daemon/model-setup-child.ts) writes to the daemon's stdout itself (the fd is
// inherited, not relayed), so under journald its lines must carry one priority prefix each, as the
// daemon's do, and none when the output is not the journal.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../src/config/index.js';
import { runSetupChild } from '../helpers/setup-child.js';
import { writeTinyClassifier } from '../helpers/tiny-model.js';

let dir: string;
let config: Config;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'logger-child-'));
  const model = await writeTinyClassifier(dir);
  const file = path.join(dir, 'config.json');
  // A configured FP32 model under precision auto: the child logs its quantization hint (info) and is done.
  await writeFile(file, JSON.stringify({ stateDir: path.join(dir, 'state'), model: { path: model }, log: { format: 'auto' } }));
  config = loadConfig({ file, env: {} }).config;
});
afterAll(() => rm(dir, { recursive: true, force: true }));

/** Runs the child with its stdout on a file; `journal` sets JOURNAL_STREAM to that file's device:inode. */
function runChild(name: string, journal: boolean): Promise<string[]> {
  return runSetupChild(config, path.join(dir, name), { journal });
}

describe('model-setup child logs', () => {
  it('under journald: one priority prefix per line, then the JSON line', async () => {
    const lines = await runChild('journal.log', true);
    expect(lines.length).toBeGreaterThan(0);
    for (const line of lines) {
      expect(line).toMatch(/^<[2-7]>\{/);
      const entry = JSON.parse(line.slice(3)) as { level: number };
      expect(line.slice(0, 3)).toBe(`<${({ 60: 2, 50: 3, 40: 4, 30: 6 } as Record<number, number>)[entry.level] ?? 7}>`);
    }
    expect(lines.some((l) => l.startsWith('<6>') && l.includes('inceptiond model quantize'))).toBe(true);
  }, 120_000);

  it('elsewhere: plain JSON lines (auto is JSON on a file)', async () => {
    const lines = await runChild('plain.log', false);
    expect(lines.length).toBeGreaterThan(0);
    for (const line of lines) expect(JSON.parse(line)).toHaveProperty('level');
  }, 120_000);
});
