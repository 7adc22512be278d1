#!/usr/bin/env node
// Mixed photographs for measuring the pipeline as on a user's pictures rather than camera frames: every
// photograph in Debian's tuxpaint-stamps-default and the sample photos of python3-skimage,
// python3-sklearn and python-matplotlib-data whose longest side is at least 350 px, scaled down to at
// most 1350 px, alternately written as JPEG (quality 90) and PNG, cut-out stamps flattened onto white.
// Fetched with `apt-get download` (Debian's archive; run apt-get update first); run by hand, never by
// the tests or CI. Usage (after npm run build): node scripts/mixed-photos.mjs [--out tmp/mixed-photos]
// then e.g. `inceptiond bench --images tmp/mixed-photos --json`.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';

const { values } = parseArgs({ options: { out: { type: 'string', default: 'tmp/mixed-photos' } } });
const PACKAGES = ['tuxpaint-stamps-default', 'python3-skimage', 'python3-sklearn', 'python-matplotlib-data'];
// Stamp folders of drawings, symbols and signs, not photographs.
const NOT_PHOTOS = /\/stamps\/(symbols|town\/(cartoon|roadsigns|flags))\//;
const PHOTO_FOLDERS = /\/(stamps|skimage\/data|sklearn\/datasets\/images|sample_data)\//;
const [MIN_SIDE, MAX_SIDE] = [350, 1350];

const out = path.resolve(values.out);
const debs = `${out}.debs`;
mkdirSync(debs, { recursive: true });
execFileSync('apt-get', ['download', ...PACKAGES], { cwd: debs, stdio: ['ignore', 'ignore', 'inherit'] });
for (const deb of readdirSync(debs).filter((f) => f.endsWith('.deb'))) execFileSync('dpkg', ['-x', deb, 'x'], { cwd: debs });
const found = execFileSync('find', ['x', '-type', 'f', '(', '-name', '*.png', '-o', '-name', '*.jpg', ')'], { cwd: debs, encoding: 'utf8' })
  .split('\n')
  .filter((f) => PHOTO_FOLDERS.test(f) && !NOT_PHOTOS.test(f))
  .sort();

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
const sides = [];
for (const file of found) {
  const meta = await sharp(path.join(debs, file))
    .metadata()
    .catch(() => undefined); // skimage ships a deliberately truncated JPEG
  const side = Math.max(meta?.width ?? 0, meta?.height ?? 0);
  // Photographs only: at least MIN_SIDE, in colour (skimage's grey test images are left out), stamps aside.
  if (side < MIN_SIDE || (meta.channels < 3 && !file.includes('/stamps/'))) continue;
  let image = sharp(path.join(debs, file)).resize(MAX_SIDE, MAX_SIDE, { fit: 'inside', withoutEnlargement: true });
  if (meta.hasAlpha) image = image.flatten({ background: '#ffffff' });
  const png = sides.length % 2 === 1;
  const name = `${String(sides.length + 1).padStart(3, '0')}.${png ? 'png' : 'jpg'}`;
  await (png ? image.png() : image.jpeg({ quality: 90 })).toFile(path.join(out, name));
  sides.push(Math.min(side, MAX_SIDE));
}
rmSync(debs, { recursive: true, force: true });
sides.sort((a, b) => a - b);
console.log(
  `${sides.length} photographs in ${path.relative(process.cwd(), out)} (JPEG and PNG alternately), longest side ${sides[0]}–${sides.at(-1)} px, median ${sides[sides.length >> 1]}`,
);
