import { afterEach, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, readdir, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fetchModel } from '../../src/model/fetch.js';
import { loadManifest } from '../../src/model/manifest.js';

/** Deterministic pseudo-random payload standing in for a model file. */
function payload(size: number): Buffer {
  const b = Buffer.alloc(size);
  let s = 7;
  for (let i = 0; i < size; i++) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    b[i] = s >> 16;
  }
  return b;
}

const body = payload(300_000);
const sha = createHash('sha256').update(body).digest('hex');

interface ServerState {
  /** Destroy the socket after this many body bytes on the next full (non-range) response. */
  cutAfter?: number;
  honourRange: boolean;
  requests: { range?: string }[];
}

const servers: http.Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

async function serve(state: ServerState): Promise<string> {
  const server = http.createServer((req, res) => {
    state.requests.push({ range: req.headers.range });
    if (req.url === '/redirect') {
      res.writeHead(302, { location: '/model.onnx' }).end();
      return;
    }
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (m && state.honourRange) {
      const from = Number(m[1]);
      res.writeHead(206, { 'content-length': body.length - from, 'content-range': `bytes ${from}-${body.length - 1}/${body.length}` });
      res.end(body.subarray(from));
      return;
    }
    res.writeHead(200, { 'content-length': body.length });
    if (state.cutAfter !== undefined) {
      const cut = state.cutAfter;
      state.cutAfter = undefined;
      // flush the first part, then drop the connection mid-body
      res.write(body.subarray(0, cut), () => res.socket?.destroySoon());
      return;
    }
    res.end(body);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** A catalogue dir with one manifest pointing at the local server. */
async function catalogue(url: string, sha256 = sha): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'model-fetch-'));
  await writeFile(path.join(dir, 'labels.txt'), 'a\nb\n');
  await writeFile(
    path.join(dir, 'tiny.json'),
    JSON.stringify({
      name: 'tiny',
      file: 'tiny.onnx',
      source: { url, sha256, size: body.length },
      input: { name: 'x', layout: 'NCHW', width: 4, height: 4, channels: 'RGB', scale: 1, mean: [0, 0, 0], std: [1, 1, 1], resize: 'fill' },
      output: { name: 'y', activation: 'none' },
      labels: 'labels.txt',
    }),
  );
  return dir;
}

describe('fetchModel', () => {
  it('downloads through a redirect, verifies, and writes the manifest beside the file', async () => {
    const state: ServerState = { honourRange: true, requests: [] };
    const base = await serve(state);
    const dir = await catalogue(`${base}/redirect`);
    const out = path.join(dir, 'dl', 'tiny.onnx');
    const r = await fetchModel({ name: 'tiny', out, catalogueDir: dir, progress: false });
    expect(r.path).toBe(out);
    expect((await readFile(out)).equals(body)).toBe(true);
    const m = await loadManifest(r.manifestPath);
    expect(r.manifestPath).toBe(`${out}.json`);
    expect(m.file).toBe('tiny.onnx');
    expect(m.source?.sha256).toBe(sha);
    expect(m.labels).toBe(path.join('..', 'labels.txt'));
    expect(await readdir(path.dirname(out))).toEqual(['tiny.onnx', 'tiny.onnx.json']);
  });

  it('refuses a checksum mismatch and leaves no file behind', async () => {
    const base = await serve({ honourRange: true, requests: [] });
    const dir = await catalogue(`${base}/model.onnx`, 'f'.repeat(64));
    const out = path.join(dir, 'dl', 'tiny.onnx');
    await expect(fetchModel({ name: 'tiny', out, catalogueDir: dir, progress: false })).rejects.toThrow(
      /sha256 mismatch .*expected f{64}, got [0-9a-f]{64}; the file was deleted/,
    );
    expect(await readdir(path.dirname(out))).toEqual([]);
  });

  it.each([
    ['resumes with a Range request', true],
    ['restarts when the server ignores Range', false],
  ])('after an interrupted download, %s', async (_title, honourRange) => {
    const state: ServerState = { honourRange, cutAfter: 100_000, requests: [] };
    const base = await serve(state);
    const dir = await catalogue(`${base}/model.onnx`);
    const out = path.join(dir, 'tiny.onnx');
    await expect(fetchModel({ name: 'tiny', out, catalogueDir: dir, progress: false })).rejects.toThrow(/interrupted/);
    expect((await readdir(dir)).filter((n) => n.startsWith('tiny.onnx'))).toEqual(['tiny.onnx.part']);

    const r = await fetchModel({ name: 'tiny', out, catalogueDir: dir, progress: false });
    expect((await readFile(r.path)).equals(body)).toBe(true);
    const second = state.requests.at(-1)!;
    expect(second.range).toMatch(/^bytes=\d+-$/);
    expect(Number(/\d+/.exec(second.range!)![0])).toBeGreaterThan(0);
    expect((await readdir(dir)).filter((n) => n.startsWith('tiny.onnx')).sort()).toEqual(['tiny.onnx', 'tiny.onnx.json']);
  });

  it('names the catalogue when the model is unknown', async () => {
    const dir = await catalogue('http://127.0.0.1:9/x.onnx');
    await expect(fetchModel({ name: 'nope', catalogueDir: dir, progress: false })).rejects.toThrow(
      /unknown model "nope" \(catalogued: tiny\)/,
    );
  });
});
