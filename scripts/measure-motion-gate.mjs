#!/usr/bin/env node
// What motion gating saves on an always-on board: the daemon at 1 frame/s on a still scene (one
// 1280×720 photograph with fresh sensor-like noise in every frame), gating off and on, interleaved so
// both see the same machine load. The runs share one state directory, so the model is prepared once. Reports the daemon's CPU (% of one core) for each and their ratio.
//   node scripts/measure-motion-gate.mjs [--seconds 60] [--rounds 2]
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '60' }, rounds: { type: 'string', default: '2' } } });
const work = await mkdtemp(path.join(tmpdir(), 'inceptiond-motion-'));
const frames = path.join(work, 'frames');
await mkdir(frames);
const scene = await sharp('models/samples/07-street.jpg')
  .resize(1280, 720, { fit: 'fill' })
  .removeAlpha()
  .raw()
  .toBuffer({ resolveWithObject: true });
let seed = 7;
const random = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
for (let i = 0; i < 10; i++) {
  const noisy = Buffer.from(scene.data);
  // ±4 grey levels of noise per pixel, new in every frame, as a still camera's sensor gives.
  for (let p = 0; p < noisy.length; p++) noisy[p] = Math.max(0, Math.min(255, noisy[p] + Math.round((random() - 0.5) * 8)));
  await writeFile(path.join(frames, `f${i}.jpg`), await sharp(noisy, { raw: scene.info }).jpeg({ quality: 85 }).toBuffer());
}

const run = async (gating) => {
  const args = ['scripts/measure-daemon.mjs', '--seconds', values.seconds, '--interval-ms', '1000', '--state', path.join(work, 'state')];
  const env = { ...process.env, INCEPTIOND_CAPTURE_FILES_PATH: frames, INCEPTIOND_MOTION_ENABLED: String(gating) };
  const { stdout } = await promisify(execFile)(process.execPath, args, { env, encoding: 'utf8' });
  return JSON.parse(stdout);
};
const off = [];
const on = [];
for (let r = 0; r < Number(values.rounds); r++) {
  off.push(await run(false));
  on.push(await run(true));
}
const mean = (list, key) => list.reduce((a, b) => a + b[key], 0) / list.length;
const report = {
  secondsPerRun: Number(values.seconds),
  rounds: Number(values.rounds),
  gatingOff: {
    cpuPercentOfOneCore: Number(mean(off, 'cpuPercentOfOneCore').toFixed(2)),
    frames: mean(off, 'frames'),
    gated: mean(off, 'gated'),
  },
  gatingOn: {
    cpuPercentOfOneCore: Number(mean(on, 'cpuPercentOfOneCore').toFixed(2)),
    frames: mean(on, 'frames'),
    gated: mean(on, 'gated'),
  },
};
report.cpuRatioOnOverOff = Number((report.gatingOn.cpuPercentOfOneCore / report.gatingOff.cpuPercentOfOneCore).toFixed(3));
console.log(JSON.stringify(report, null, 2));
await rm(work, { recursive: true, force: true });
