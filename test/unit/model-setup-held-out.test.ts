// The daemon's own quantization (model.precision int8) logs its end-to-end figure: logits SQNR and
// top-1 agreement on the calibration images it held out. Checked in-process and in the model-setup
// child process the daemon really uses (it writes to the daemon's stdout itself).
import { fork } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../src/config/index.js';
import type { ChildMessage, ChildRequest } from '../../src/daemon/model-setup-child.js';
import { prepareModel } from '../../src/daemon/model-setup.js';
import { createLogger } from '../../src/ops/index.js';
import { trainedTinyCnn, type TrainedTinyCnn } from '../helpers/trained-tiny-cnn.js';

const childModule = fileURLToPath(new URL('../../src/daemon/model-setup-child.ts', import.meta.url));
const loader = new URL('../../src/inference/dev-ts-loader.mjs', import.meta.url).href;
const boot = `import { register } from 'node:module'; register(${JSON.stringify(loader)});`;

const FIGURE = /^INT8 vs FP32 on 4 held-out image\(s\): logits SQNR \d+\.\d dB, top-1 agreement \d+\.\d %$/;

let net: TrainedTinyCnn;
let dir: string;
let frames: string;

async function config(name: string, calibration: string): Promise<Config> {
  const file = path.join(dir, `${name}.json`);
  await writeFile(
    file,
    JSON.stringify({
      stateDir: path.join(dir, `state-${name}`),
      capture: { backend: 'webcam' },
      model: { path: net.modelPath, precision: 'int8', calibration: { path: calibration } },
    }),
  );
  return loadConfig({ file, env: {} }).config;
}

beforeAll(async () => {
  net = await trainedTinyCnn();
  dir = await mkdtemp(path.join(os.tmpdir(), 'model-setup-held-out-'));
  frames = path.join(dir, 'frames');
  await mkdir(frames);
  for (const [i, f] of net.calibration.files.slice(0, 20).entries()) {
    await copyFile(f, path.join(frames, `frame-${String(i).padStart(4, '0')}.jpg`));
  }
}, 180_000);
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('the daemon quantizing its model', () => {
  it('calibrates on 16 of 20 images and logs the figure measured on the other 4, in one info line', async () => {
    const lines: string[] = [];
    const logger = createLogger({ level: 'info', name: 'test', destination: { write: (s: string) => void lines.push(s) } });
    const m = await prepareModel(await config('in-process', frames), logger);
    expect(m.precision).toBe('int8');
    const entries = lines.map((l) => JSON.parse(l) as { msg: string; level: number; heldOutImages?: number; sqnrDb?: number });
    expect(entries.some((e) => e.msg.startsWith('quantizing tiny-cnn.onnx to INT8 (percentile calibration on 16 images)'))).toBe(true);
    const figure = entries.filter((e) => FIGURE.test(e.msg));
    expect(figure).toHaveLength(1);
    expect(figure[0]).toMatchObject({ level: 30, heldOutImages: 4 });
    expect(figure[0]!.sqnrDb).toBeGreaterThan(20);
  }, 120_000);

  it('says why there is no figure when the folder has fewer than 20 images', async () => {
    const few = path.join(dir, 'few');
    await mkdir(few);
    for (const f of net.calibration.files.slice(0, 3)) await copyFile(f, path.join(few, path.basename(f)));
    const lines: string[] = [];
    const logger = createLogger({ level: 'info', name: 'test', destination: { write: (s: string) => void lines.push(s) } });
    await prepareModel(await config('few', few), logger);
    const msgs = lines.map((l) => (JSON.parse(l) as { msg: string }).msg);
    expect(msgs).toContain('INT8 accuracy not measured: 3 calibration image(s), at least 20 are needed to hold some out');
    expect(msgs.some((x) => FIGURE.test(x))).toBe(false);
  }, 120_000);

  it('the model-setup child writes the figure to the daemon output', async () => {
    const cfg = await config('child', frames);
    const logFile = path.join(dir, 'child.log');
    const fd = openSync(logFile, 'w');
    try {
      const env: NodeJS.ProcessEnv = { ...process.env };
      delete env.JOURNAL_STREAM;
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
      child.send({ config: cfg, level: 'info', logFd: 1 } satisfies ChildRequest);
      expect(await outcome).toMatchObject({ kind: 'done' });
      await new Promise((resolve) => (child.exitCode === null ? child.once('exit', resolve) : resolve(undefined)));
    } finally {
      closeSync(fd);
    }
    const msgs = readFileSync(logFile, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => (JSON.parse(l) as { msg: string }).msg);
    expect(msgs.filter((x) => FIGURE.test(x))).toHaveLength(1);
  }, 120_000);
});
