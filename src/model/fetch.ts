/**
 * Downloads a catalogued model (models/*.json with a `source`), verifies size and sha256, and
 * writes its manifest beside it. Streams to `<out>.part`, resumes it with a Range request, and only
 * renames to `out` once verified, so `out` is either absent or correct.
 */
import { mkdir, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import cliProgress from 'cli-progress';
import type { Logger } from 'pino';
import { fileSha256, LogThrottle } from '../util/index.js';
import { loadManifest, modelsDir, writeManifestBeside, type ModelManifest } from './manifest.js';

export interface FetchOptions {
  /** Catalogue name (a models/*.json manifest `name` or file stem); default "inception-v2". */
  name?: string;
  /** Download from here instead of the catalogue URL (size/sha256 still checked when known). */
  url?: string;
  /** Output file; default: the manifest's `file` in the catalogue's directory. */
  out?: string;
  sha256?: string;
  size?: number;
  logger?: Logger;
  /** Progress bar on stderr: default when stderr is a TTY. */
  progress?: boolean;
  /** Where catalogue manifests live (default: the project's models/). */
  catalogueDir?: string;
}

export interface FetchResult {
  path: string;
  manifestPath: string;
}

export class FetchError extends Error {
  override name = 'FetchError';
}

const MAX_REDIRECTS = 10;
/** Received but not yet written bytes above which the download pauses the network. */
const MAX_QUEUED_BYTES = 8 * 1024 * 1024;
const LOG_INTERVAL_MS = 5000;

/** Catalogue entries: manifests in `dir` that have a download source. */
export async function listCatalogue(dir = modelsDir): Promise<{ manifest: ModelManifest; manifestPath: string }[]> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith('.json')).sort();
  } catch {
    return [];
  }
  const out: { manifest: ModelManifest; manifestPath: string }[] = [];
  for (const n of names) {
    const manifestPath = path.join(dir, n);
    try {
      const manifest = await loadManifest(manifestPath);
      if (manifest.source) out.push({ manifest, manifestPath });
    } catch {
      // not a manifest (or a broken one): not part of the catalogue
    }
  }
  return out;
}

interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: http.IncomingMessage;
}

/** GET with redirects followed; the caller consumes or destroys the body. */
async function get(url: string, headers: Record<string, string>, redirects = 0): Promise<Response> {
  const u = new URL(url);
  const mod = u.protocol === 'https:' ? https : u.protocol === 'http:' ? http : undefined;
  if (!mod) throw new FetchError(`unsupported URL scheme: ${url}`);
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const req = mod.get(u, { headers: { 'user-agent': 'inceptiond', ...headers } }, resolve);
    req.on('error', (err) => reject(new FetchError(`download of ${url} failed: ${err.message}`)));
  });
  const status = res.statusCode ?? 0;
  if (status >= 300 && status < 400 && res.headers.location) {
    res.resume();
    if (redirects >= MAX_REDIRECTS) throw new FetchError(`too many redirects fetching ${url}`);
    return get(new URL(res.headers.location, u).toString(), headers, redirects + 1);
  }
  return { status, headers: res.headers, body: res };
}

async function fileSize(p: string): Promise<number> {
  try {
    return (await stat(p)).size;
  } catch {
    return 0;
  }
}

interface Target {
  url: string;
  out: string;
  sha256?: string;
  size?: number;
  manifest?: ModelManifest;
  manifestDir?: string;
}

async function resolveTarget(opts: FetchOptions): Promise<Target> {
  const name = opts.name ?? (opts.url ? undefined : 'inception-v2');
  let entry: { manifest: ModelManifest; manifestPath: string } | undefined;
  if (name) {
    const catalogue = await listCatalogue(opts.catalogueDir);
    entry = catalogue.find((e) => e.manifest.name === name || path.basename(e.manifestPath, '.json') === name);
    if (!entry) {
      const known = catalogue.map((e) => e.manifest.name).join(', ') || 'none';
      throw new FetchError(`unknown model "${name}" (catalogued: ${known})`);
    }
  }
  const src = entry?.manifest.source;
  const url = opts.url ?? src?.url;
  if (!url) throw new FetchError('no URL: give a catalogue name or --url');
  const manifestDir = entry ? path.dirname(entry.manifestPath) : undefined;
  const out = path.resolve(
    opts.out ?? (entry && manifestDir ? path.join(manifestDir, entry.manifest.file) : path.basename(new URL(url).pathname)),
  );
  // An explicit URL replaces the catalogue file, so the catalogue checksum only applies without one.
  const sha256 = opts.sha256 ?? (opts.url ? undefined : src?.sha256);
  const size = opts.size ?? (opts.url ? undefined : src?.size);
  return { url, out, sha256: sha256?.toLowerCase(), size, manifest: entry?.manifest, manifestDir };
}

/** Downloads into `part`, resuming when it already holds bytes and the server honours Range. */
async function download(t: Target, part: string, logger: Logger | undefined, showBar: boolean): Promise<void> {
  let have = await fileSize(part);
  if (t.size !== undefined && have > t.size) {
    await rm(part, { force: true });
    have = 0;
  }
  // Opened before the request: from the response on, nothing may be awaited until the body's listeners
  // are attached, or a body cut off meanwhile would be gone unread (see receive()).
  const file = await open(part, 'a');
  try {
    const res = await get(t.url, have > 0 ? { range: `bytes=${have}-` } : {});
    let append = false;
    if (have > 0 && res.status === 206) {
      append = true;
      logger?.info({ url: t.url, offset: have }, 'resuming download');
    } else if (res.status === 416 && have > 0 && t.size === have) {
      res.body.resume(); // the .part is already complete
      return;
    } else if (res.status !== 200) {
      res.body.resume();
      throw new FetchError(`download of ${t.url} failed: HTTP ${res.status}`);
    } else if (have > 0) {
      logger?.info({ url: t.url }, 'server ignored the range request: restarting the download');
    }
    await receive(t, res, file, append ? have : 0, logger, showBar);
  } finally {
    await file.close();
  }
}

/**
 * Writes the body to `file` (opened for appending; emptied first unless resuming at `start`). Every byte
 * received is written before an interruption is reported, so the next run resumes from the .part's size.
 * The body flows, chunks queued for writing as they arrive: a paused stream that errors drops what it
 * buffered (Node 22 does, mid-for-await), which would lose the tail.
 */
async function receive(
  t: Target,
  res: Awaited<ReturnType<typeof get>>,
  file: FileHandle,
  start: number,
  logger: Logger | undefined,
  showBar: boolean,
): Promise<void> {
  const length = Number(res.headers['content-length']);
  const total = Number.isFinite(length) ? start + length : t.size;

  let done = start;
  // Without a bar, one progress line per interval; a download that ends within the first one logs none.
  const progressLog = new LogThrottle(LOG_INTERVAL_MS);
  progressLog.mark('download');
  const bar = showBar
    ? new cliProgress.SingleBar(
        { format: 'downloading [{bar}] {percentage}% {value}/{total} MB', stream: process.stderr, hideCursor: true },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  const mb = (n: number) => Math.round(n / 1e5) / 10;
  bar?.start(mb(total ?? 0), mb(done));
  try {
    await new Promise<void>((resolve, reject) => {
      let writing: Promise<void> = start > 0 ? Promise.resolve() : file.truncate(0);
      let queued = 0;
      let failed: Error | undefined;
      const body = res.body;
      body.on('data', (chunk: Buffer) => {
        queued += chunk.length;
        if (queued > MAX_QUEUED_BYTES) body.pause(); // a slow disk: hold back the network for a while
        writing = writing.then(async () => {
          if (failed) return;
          try {
            await file.write(chunk);
          } catch (err) {
            failed = err as Error;
            body.destroy(failed);
            return;
          }
          queued -= chunk.length;
          done += chunk.length;
          if (body.isPaused() && queued <= MAX_QUEUED_BYTES / 2) body.resume();
          bar?.update(mb(done));
          if (!bar && progressLog.shouldLog('download')) logger?.info({ bytes: done, total }, 'downloading');
        });
      });
      let settled = false;
      const settle = (err?: Error) => {
        if (settled) return;
        settled = true;
        void writing.then(() => ((failed ?? err) ? reject(failed ?? err) : resolve()));
      };
      body.once('end', () => settle());
      body.once('error', (err) => settle(err));
      // Node 20 ends a cut-off body with 'end' (then complete is false), Node 22 with 'error' or only 'close'.
      body.once('close', () => settle(body.complete ? undefined : new Error('connection closed')));
    });
  } catch (err) {
    throw new FetchError(`download of ${t.url} interrupted after ${done} bytes (${(err as Error).message}); run again to resume`);
  } finally {
    bar?.stop();
  }
  if (!res.body.complete) {
    throw new FetchError(`download of ${t.url} interrupted after ${done} bytes; run again to resume`);
  }
}

/**
 * Fetches a model; the result at `path` has the expected size and sha256 (when known) and has a
 * manifest beside it. On a checksum or size mismatch nothing is left at `path` or in `<path>.part`.
 */
export async function fetchModel(opts: FetchOptions = {}): Promise<FetchResult> {
  const t = await resolveTarget(opts);
  const logger = opts.logger;
  const part = `${t.out}.part`;
  await mkdir(path.dirname(t.out), { recursive: true });
  logger?.info({ url: t.url, out: t.out }, 'downloading model');
  await download(t, part, logger, opts.progress ?? process.stderr.isTTY === true);

  const got = await fileSize(part);
  if (t.size !== undefined && got !== t.size) {
    await rm(part, { force: true });
    throw new FetchError(`size mismatch for ${t.url}: expected ${t.size} bytes, got ${got}; the file was deleted`);
  }
  const digest = await fileSha256(part);
  if (t.sha256 && digest !== t.sha256) {
    await rm(part, { force: true });
    throw new FetchError(`sha256 mismatch for ${t.url}: expected ${t.sha256}, got ${digest}; the file was deleted`);
  }
  await rename(part, t.out);
  logger?.info({ path: t.out, bytes: got, sha256: digest }, 'model downloaded and verified');

  const manifest: ModelManifest = t.manifest
    ? { ...t.manifest, source: { url: t.url, sha256: digest, size: got } }
    : {
        // No catalogue entry: a manifest with the zoo Inception v2 conventions, to be adjusted.
        ...(await loadManifest(path.join(modelsDir, 'inception-v2.json'))),
        name: path.basename(t.out, '.onnx'),
        source: { url: t.url, sha256: digest, size: got },
        notes: 'Downloaded from a URL outside the catalogue: pre-processing copied from inception-v2.json, check it.',
      };
  const manifestPath = await writeManifestBeside(t.out, manifest, t.manifestDir ?? modelsDir);
  return { path: t.out, manifestPath };
}
