#!/usr/bin/env node
// What reading a JPEG's size in JavaScript (vision/jpeg-header.ts) saves against asking sharp for it:
// sharp.metadata() + the preprocessing pipeline against the pipeline alone, on the sample photographs,
// the two ways alternating every pass over the frames in one process (so a drifting machine weighs on
// both alike), libvips as the daemon sets it. Usage: node scripts/measure-jpeg-header.mjs [--seconds 20]
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '20' } } });
sharp.cache(false);
sharp.concurrency(1);
const dir = path.join(import.meta.dirname, '..', 'models', 'samples');
const frames = readdirSync(dir)
  .filter((f) => /\.jpe?g$/i.test(f))
  .map((f) => readFileSync(path.join(dir, f)));

async function preprocess(image, withMetadata) {
  const img = sharp(image, { failOn: 'error', limitInputPixels: 40e6, ignoreIcc: true });
  if (withMetadata) await img.metadata();
  return img
    .autoOrient()
    .removeAlpha()
    .toColourspace('srgb')
    .resize(224, 224, { fit: 'cover', kernel: 'lanczos3' })
    .raw({ depth: 'uchar' })
    .toBuffer();
}

const total = { metadata: { cpuMs: 0, frames: 0 }, markers: { cpuMs: 0, frames: 0 } };
for (const f of frames) await preprocess(f, true); // warm-up
const end = performance.now() + Number(values.seconds) * 1000;
while (performance.now() < end) {
  for (const way of ['metadata', 'markers']) {
    const cpu = process.cpuUsage();
    for (const f of frames) await preprocess(f, way === 'metadata');
    const used = process.cpuUsage(cpu);
    total[way].cpuMs += (used.user + used.system) / 1000;
    total[way].frames += frames.length;
  }
}
const perFrame = (t) => Number((t.cpuMs / t.frames).toFixed(3));
console.log(
  JSON.stringify({
    cpuMsPerFrame: { metadataThenPipeline: perFrame(total.metadata), pipelineOnly: perFrame(total.markers) },
    frames: total.markers.frames,
  }),
);
