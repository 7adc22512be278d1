// The daemon's own quantization (model.precision int8) logs its end-to-end figure: logits SQNR and
// top-1 agreement on the calibration images it held out. Checked in-process and in the model-setup
// child process the daemon really uses (it writes to the daemon's stdout itself).
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../src/config/index.js';
import { prepareModel } from '../../src/daemon/model-setup.js';
import { createLogger } from '../../src/ops/index.js';
import { runSetupChild } from '../helpers/setup-child.js';
import { trainedTinyCnn, type TrainedTinyCnn } from '../helpers/trained-tiny-cnn.js';

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
    const msgs = (await runSetupChild(cfg, path.join(dir, 'child.log'))).map((l) => (JSON.parse(l) as { msg: string }).msg);
    expect(msgs.filter((x) => FIGURE.test(x))).toHaveLength(1);
  }, 120_000);
});
