import { afterEach, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, readdir, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino, type Logger } from 'pino';
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
  /** Answer the next requests with these statuses (and no body) before serving. */
  failWith?: number[];
  /** Never answer (headers), or send the headers and this many bytes and then nothing. */
  stall?: 'headers' | number;
}

const servers: http.Server[] = [];
afterEach(async () => {
  await Promise.all(
    servers.splice(0).map((s) => {
      const closed = new Promise((r) => s.close(r));
      s.closeAllConnections(); // stalled responses
      return closed;
    }),
  );
});

async function serve(state: ServerState): Promise<string> {
  const server = http.createServer((req, res) => {
    state.requests.push({ range: req.headers.range });
    const failure = state.failWith?.shift();
    if (failure !== undefined) {
      res.writeHead(failure).end();
      return;
    }
    if (state.stall === 'headers') return;
    if (typeof state.stall === 'number') {
      res.writeHead(200, { 'content-length': body.length });
      res.write(body.subarray(0, state.stall));
      return;
    }
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
    // No retry: the next run resumes
    await expect(fetchModel({ name: 'tiny', out, catalogueDir: dir, progress: false, retries: 0 })).rejects.toThrow(/interrupted/);
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

/** A pino logger whose warnings land in `warnings`. */
function recordingLogger(): { logger: Logger; warnings: { msg: string; err?: string; attempt?: number }[] } {
  const warnings: { msg: string; err?: string; attempt?: number }[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) {
        const entry = JSON.parse(line) as { level: number; msg: string; err?: string; attempt?: number };
        if (entry.level === 40) warnings.push(entry);
      }
      done();
    },
  });
  return { logger: pino({ level: 'info' }, sink) as Logger, warnings };
}

describe('fetchModel over an unreliable network', () => {
  it.each([
    ['sends no response', 'headers' as const, /timed out: no response for 0\.3 s/],
    ['stops sending the body', 50_000, /interrupted after 50000 bytes \(timed out: no data for 0\.3 s\)/],
  ])('fails with a timeout error when the server %s, after its retries', async (_title, stall, message) => {
    const state: ServerState = { honourRange: true, requests: [], stall };
    const base = await serve(state);
    const dir = await catalogue(`${base}/model.onnx`);
    const began = Date.now();
    const err = await fetchModel({ name: 'tiny', catalogueDir: dir, progress: false, timeoutMs: 300, retries: 1, retryDelayMs: 10 }).catch(
      (e: unknown) => e as Error,
    );
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(message);
    expect((err as Error).message).toMatch(/gave up after 2 attempts/);
    expect(state.requests).toHaveLength(2);
    expect(Date.now() - began).toBeLessThan(10_000);
  });

  it('retries a 503 with backoff, says so, and then succeeds', async () => {
    const state: ServerState = { honourRange: true, requests: [], failWith: [503, 503] };
    const base = await serve(state);
    const dir = await catalogue(`${base}/model.onnx`);
    const { logger, warnings } = recordingLogger();
    const r = await fetchModel({ name: 'tiny', catalogueDir: dir, progress: false, logger, retryDelayMs: 10 });
    expect((await readFile(r.path)).equals(body)).toBe(true);
    expect(state.requests).toHaveLength(3);
    expect(warnings.map((w) => [w.attempt, w.err])).toEqual([
      [1, `download of ${base}/model.onnx failed: HTTP 503`],
      [2, `download of ${base}/model.onnx failed: HTTP 503`],
    ]);
    expect(warnings[0].msg).toMatch(/retrying in \d+ ms/);
  });

  it('does not retry a 4xx', async () => {
    const state: ServerState = { honourRange: true, requests: [], failWith: [404] };
    const base = await serve(state);
    const dir = await catalogue(`${base}/model.onnx`);
    await expect(fetchModel({ name: 'tiny', catalogueDir: dir, progress: false, retryDelayMs: 10 })).rejects.toThrow(/failed: HTTP 404$/);
    expect(state.requests).toHaveLength(1);
  });

  it('resumes a body cut off mid-way within the same run', async () => {
    const state: ServerState = { honourRange: true, cutAfter: 100_000, requests: [] };
    const base = await serve(state);
    const dir = await catalogue(`${base}/model.onnx`);
    const r = await fetchModel({ name: 'tiny', catalogueDir: dir, out: path.join(dir, 'tiny.onnx'), progress: false, retryDelayMs: 10 });
    expect((await readFile(r.path)).equals(body)).toBe(true);
    expect(state.requests.map((q) => q.range)).toEqual([undefined, expect.stringMatching(/^bytes=[1-9]\d*-$/)]);
  });
});

/** A forwarding HTTP proxy (CONNECT tunnels and absolute-URL requests) that records what went through it. */
async function startHttpProxy(): Promise<{ url: string; through: string[] }> {
  const through: string[] = [];
  const proxy = http.createServer((req, res) => {
    through.push(req.url ?? '');
    const target = new URL(req.url ?? '');
    const upstream = http.request(target, { method: req.method, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  proxy.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    through.push(`CONNECT ${req.url}`);
    const [host, port] = (req.url ?? '').split(':');
    const upstream = net.connect(Number(port), host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    const drop = () => {
      client.destroy();
      upstream.destroy();
    };
    upstream.on('error', drop).on('close', drop);
    client.on('error', drop).on('close', drop);
  });
  servers.push(proxy);
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`, through };
}

describe('fetchModel through a proxy', () => {
  const names = ['HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy', 'NO_PROXY', 'no_proxy'];
  const saved: Record<string, string | undefined> = {};
  afterEach(() => {
    for (const n of names) {
      if (saved[n] === undefined) delete process.env[n];
      else process.env[n] = saved[n];
    }
  });

  it('goes through HTTP_PROXY, except for the hosts in NO_PROXY', async () => {
    for (const n of names) {
      saved[n] = process.env[n];
      delete process.env[n];
    }
    const state: ServerState = { honourRange: true, requests: [] };
    const base = await serve(state);
    const target = new URL(base).host;
    const proxy = await startHttpProxy();
    const dir = await catalogue(`${base}/model.onnx`);

    process.env.HTTP_PROXY = proxy.url;
    const viaProxy = await fetchModel({ name: 'tiny', catalogueDir: dir, out: path.join(dir, 'a.onnx'), progress: false });
    expect((await readFile(viaProxy.path)).equals(body)).toBe(true);
    expect(proxy.through).toHaveLength(1);
    expect(proxy.through[0]).toMatch(new RegExp(`^(CONNECT ${target}|http://${target}/model\\.onnx)$`));
    expect(state.requests).toHaveLength(1);

    process.env.NO_PROXY = '127.0.0.1';
    const direct = await fetchModel({ name: 'tiny', catalogueDir: dir, out: path.join(dir, 'b.onnx'), progress: false });
    expect((await readFile(direct.path)).equals(body)).toBe(true);
    expect(proxy.through).toHaveLength(1); // bypassed
    expect(state.requests).toHaveLength(2);
  });
});
