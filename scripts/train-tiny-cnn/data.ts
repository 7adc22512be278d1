/**
 * Seeded synthetic labelled image set: 10 classes = 5 shapes × 2 colour families, drawn with sharp
 * (SVG via librsvg) over a noisy, gradient background at a random position, size and rotation, and
 * written as JPEG. The class index and name are in the file name: `<idx>-<class>-<nnnn>.jpg`.
 */
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { mulberry32 } from '../../src/util/index.js';

export const SHAPES = ['circle', 'square', 'triangle', 'ring', 'cross'] as const;
export const COLOURS = ['warm', 'cool'] as const;
export const CLASSES: string[] = SHAPES.flatMap((s) => COLOURS.map((c) => `${s}-${c}`));
export const IMAGE_SIZE = 64;

/** Seeded numbers in [0, 1) (mulberry32). */
export const rng = mulberry32;

export function gaussian(r: () => number): () => number {
  return () => {
    const u = Math.max(r(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * r());
  };
}

function hsl(h: number, s: number, l: number): [number, number, number] {
  const k = (n: number): number => (n + h / 30) % 12;
  const a = s * Math.min(l, 1 - l);
  const f = (n: number): number => l - a * Math.max(-1, Math.min(k(n) - 3, Math.min(9 - k(n), 1)));
  return [Math.round(f(0) * 255), Math.round(f(8) * 255), Math.round(f(4) * 255)];
}

function shapeSvg(shape: (typeof SHAPES)[number], cx: number, cy: number, r: number, rot: number, fill: string): string {
  const t = `transform="rotate(${rot.toFixed(2)} ${cx.toFixed(2)} ${cy.toFixed(2)})"`;
  switch (shape) {
    case 'circle':
      return `<circle cx="${cx}" cy="${cy}" r="${r}" fill="${fill}"/>`;
    case 'ring':
      return `<circle cx="${cx}" cy="${cy}" r="${r * 0.8}" fill="none" stroke="${fill}" stroke-width="${r * 0.4}"/>`;
    case 'square': {
      const s = r * 1.5;
      return `<rect x="${cx - s / 2}" y="${cy - s / 2}" width="${s}" height="${s}" fill="${fill}" ${t}/>`;
    }
    case 'triangle': {
      const pts = [0, 1, 2]
        .map((i) => {
          const a = -Math.PI / 2 + (i * 2 * Math.PI) / 3;
          return `${(cx + r * 1.1 * Math.cos(a)).toFixed(2)},${(cy + r * 1.1 * Math.sin(a)).toFixed(2)}`;
        })
        .join(' ');
      return `<polygon points="${pts}" fill="${fill}" ${t}/>`;
    }
    case 'cross': {
      const w = r * 0.5;
      const l = r * 2;
      return (
        `<g ${t}><rect x="${cx - w / 2}" y="${cy - l / 2}" width="${w}" height="${l}" fill="${fill}"/>` +
        `<rect x="${cx - l / 2}" y="${cy - w / 2}" width="${l}" height="${w}" fill="${fill}"/></g>`
      );
    }
  }
}

/** One image of class `label`, as JPEG bytes. */
async function drawImage(label: number, r: () => number): Promise<Buffer> {
  const N = IMAGE_SIZE;
  const g = gaussian(r);
  const shape = SHAPES[Math.floor(label / COLOURS.length)]!;
  const colour = COLOURS[label % COLOURS.length]!;
  // Warm: red..yellow (hue -30..55), cool: cyan..violet (hue 175..265).
  const hue = colour === 'warm' ? (330 + r() * 85) % 360 : 175 + r() * 90;
  const [fr, fg, fb] = hsl(hue, 0.55 + r() * 0.45, 0.35 + r() * 0.3);
  const radius = N * (0.16 + r() * 0.14);
  const m = radius * 1.2;
  const cx = m + r() * (N - 2 * m);
  const cy = m + r() * (N - 2 * m);
  const svg =
    `<svg xmlns="http://www.w3.org/2000/svg" width="${N}" height="${N}">` +
    shapeSvg(shape, cx, cy, radius, r() * 360, `rgb(${fr},${fg},${fb})`) +
    '</svg>';
  const { data: fg4 } = await sharp(Buffer.from(svg)).ensureAlpha().raw().toBuffer({ resolveWithObject: true });

  // Background: a low-saturation colour with a linear gradient and per-pixel noise.
  const [br, bgc, bb] = hsl(r() * 360, r() * 0.35, 0.25 + r() * 0.5);
  const gx = (r() - 0.5) * 1.6;
  const gy = (r() - 0.5) * 1.6;
  const noise = 6 + r() * 14;
  const out = Buffer.alloc(N * N * 3);
  for (let y = 0; y < N; y++) {
    for (let x = 0; x < N; x++) {
      const i = y * N + x;
      const alpha = fg4[i * 4 + 3]! / 255;
      const grad = gx * (x - N / 2) + gy * (y - N / 2);
      const base = [br, bgc, bb];
      for (let c = 0; c < 3; c++) {
        const bgv = base[c]! + grad + g() * noise;
        const v = alpha * fg4[i * 4 + c]! + (1 - alpha) * bgv + alpha * g() * noise * 0.5;
        out[i * 3 + c] = Math.max(0, Math.min(255, Math.round(v)));
      }
    }
  }
  return sharp(out, { raw: { width: N, height: N, channels: 3 } })
    .jpeg({ quality: 85 })
    .toBuffer();
}

export interface Split {
  dir: string;
  count: number;
  seed: number;
}

/**
 * Writes `count` images (classes balanced, order shuffled by the seed) into `dir`; skips the work
 * when a stamp file says the folder already holds exactly this split.
 */
export async function writeSplit(split: Split): Promise<{ files: string[]; labels: number[] }> {
  const stamp = path.join(split.dir, '.stamp.json');
  const want = JSON.stringify({ count: split.count, seed: split.seed, size: IMAGE_SIZE, v: 1 });
  const have = await readFile(stamp, 'utf8').catch(() => '');
  if (have !== want) {
    await rm(split.dir, { recursive: true, force: true });
    await mkdir(split.dir, { recursive: true });
    const r = rng(split.seed);
    const order = Array.from({ length: split.count }, (_, i) => i % CLASSES.length);
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    for (let k = 0; k < order.length; k++) {
      const label = order[k]!;
      const name = `${String(label).padStart(2, '0')}-${CLASSES[label]}-${String(k).padStart(4, '0')}.jpg`;
      await writeFile(path.join(split.dir, name), await drawImage(label, r));
    }
    await writeFile(stamp, want);
  }
  return listSplit(split.dir);
}

export async function listSplit(dir: string): Promise<{ files: string[]; labels: number[] }> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.jpg')).sort();
  return { files: files.map((f) => path.join(dir, f)), labels: files.map((f) => Number(f.slice(0, 2))) };
}
