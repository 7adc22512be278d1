// Generates the synthetic sample frames in models/samples (committed; rerun only to change them).
// They are drawn, not photographed: the built model's labels for them mean nothing.
import sharp from 'sharp';
import { mkdir } from 'node:fs/promises';

const out = new URL('../models/samples/', import.meta.url);
await mkdir(out, { recursive: true });
const scenes = [
  ['01-sunset', '#ff7e29', '#2b1055', '<circle cx="320" cy="300" r="90" fill="#ffd23f"/>'],
  [
    '02-meadow',
    '#87ceeb',
    '#2e8b57',
    '<rect x="0" y="300" width="640" height="180" fill="#3a7d1c"/><circle cx="520" cy="90" r="50" fill="#fff6a0"/>',
  ],
  [
    '03-night',
    '#050520',
    '#1a1a40',
    '<circle cx="480" cy="120" r="60" fill="#e8e8ff"/><rect x="80" y="260" width="120" height="220" fill="#222"/>',
  ],
  [
    '04-checker',
    '#ffffff',
    '#dddddd',
    Array.from(
      { length: 48 },
      (_, i) => `<rect x="${(i % 8) * 80}" y="${Math.floor(i / 8) * 80}" width="40" height="40" fill="#111"/>`,
    ).join(''),
  ],
  [
    '05-stripes',
    '#c0392b',
    '#8e44ad',
    Array.from({ length: 16 }, (_, i) => `<rect x="${i * 40}" y="0" width="20" height="480" fill="#f1c40f"/>`).join(''),
  ],
  [
    '06-rings',
    '#0b3d91',
    '#00a8e8',
    Array.from({ length: 8 }, (_, i) => `<circle cx="320" cy="240" r="${230 - i * 28}" fill="none" stroke="#fff" stroke-width="10"/>`).join(
      '',
    ),
  ],
  [
    '07-street',
    '#9aa5b1',
    '#3e4c59',
    '<rect x="0" y="330" width="640" height="150" fill="#333"/><rect x="100" y="250" width="220" height="90" rx="20" fill="#d62828"/><circle cx="150" cy="345" r="28" fill="#111"/><circle cx="270" cy="345" r="28" fill="#111"/>',
  ],
  [
    '08-fruit',
    '#fdf0d5',
    '#f4a261',
    '<circle cx="220" cy="260" r="110" fill="#e63946"/><circle cx="420" cy="270" r="100" fill="#ffb703"/><rect x="215" y="120" width="10" height="40" fill="#4b3621"/>',
  ],
];
for (const [name, top, bottom, body] of scenes) {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="640" height="480">
    <defs><linearGradient id="g" x1="0" y1="0" x2="0" y2="1"><stop offset="0" stop-color="${top}"/><stop offset="1" stop-color="${bottom}"/></linearGradient></defs>
    <rect width="640" height="480" fill="url(#g)"/>${body}</svg>`;
  await sharp(Buffer.from(svg))
    .jpeg({ quality: 85 })
    .toFile(new URL(`${name}.jpg`, out).pathname);
}
console.log(`wrote ${scenes.length} samples to ${out.pathname}`);
