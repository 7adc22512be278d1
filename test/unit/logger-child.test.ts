// The model-setup child (src/daemon/model-setup-child.ts) writes to the daemon's stdout itself (the fd is
// inherited, not relayed), so under journald its lines must carry one priority prefix each, as the
// daemon's do, and none when the output is not the journal.
import { fork } from 'node:child_process';
import { closeSync, fstatSync, openSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../src/config/index.js';
import type { ChildMessage, ChildRequest } from '../../src/daemon/model-setup-child.js';
import { writeTinyClassifier } from '../helpers/tiny-model.js';

const childModule = fileURLToPath(new URL('../../src/daemon/model-setup-child.ts', import.meta.url));
const loader = new URL('../../src/inference/dev-ts-loader.mjs', import.meta.url).href;
const boot = `import { register } from 'node:module'; register(${JSON.stringify(loader)});`;

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
async function runChild(name: string, journal: boolean): Promise<string[]> {
  const logFile = path.join(dir, name);
  const fd = openSync(logFile, 'w');
  try {
    const st = fstatSync(fd, { bigint: true });
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.JOURNAL_STREAM;
    if (journal) env.JOURNAL_STREAM = `${st.dev}:${st.ino}`;
    const child = fork(childModule, [], {
      serialization: 'advanced',
      stdio: ['ignore', fd, 'inherit', 'ipc'],
      env,
      execArgv: ['--import', `data:text/javascript,${encodeURIComponent(boot)}`],
    });
    const outcome = new Promise<ChildMessage>((resolve, reject) => {
      child.on('message', (m: ChildMessage) => m.kind !== 'status' && resolve(m));
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`child exited (${code}) without an answer`)));
    });
    child.send({ config, level: 'info', logFd: 1 } satisfies ChildRequest);
    expect(await outcome).toMatchObject({ kind: 'done' });
    await new Promise((resolve) => (child.exitCode === null ? child.once('exit', resolve) : resolve(undefined)));
  } finally {
    closeSync(fd);
  }
  return readFileSync(logFile, 'utf8').split('\n').filter(Boolean);
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
