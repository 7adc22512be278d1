/**
 * Downloads a catalogued model (models/*.json with a `source`), verifies size and sha256, and
 * writes its manifest beside it. Streams to `<out>.part`, resumes it with a Range request, and only
 * renames to `out` once verified, so `out` is either absent or correct.
 *
 * HTTP goes through undici: the proxy comes from the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY,
 * or their lower-case forms), a connection, response or body that stays silent for `timeoutMs` fails, and a
 * transient failure (5xx, 408, 429, a reset or refused connection, a timeout, a body cut off) is retried
 * with exponential backoff, resuming the .part where it stopped.
 */
import { mkdir, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import cliProgress from 'cli-progress';
import type { Logger } from 'pino';
import { EnvHttpProxyAgent, request, type Dispatcher } from 'undici';
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
  /** A connection, response or body silent for this long fails the attempt. Default 30 s. */
  timeoutMs?: number;
  /** Further attempts after a transient failure (5xx, 408, 429, connection reset or refused, timeout). Default 4. */
  retries?: number;
  /** Delay before the first retry; it doubles for each next one (±20 % jitter, at most 30 s). Default 1 s. */
  retryDelayMs?: number;
}

export interface FetchResult {
  path: string;
  manifestPath: string;
}

export class FetchError extends Error {
  override name = 'FetchError';
  constructor(
    message: string,
    /** A later attempt may succeed (server error, network, timeout); not a 4xx, a checksum or a usage error. */
    readonly transient = false,
  ) {
    super(message);
  }
}

const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_RETRIES = 4;
const DEFAULT_RETRY_DELAY_MS = 1_000;
const MAX_RETRY_DELAY_MS = 30_000;
/** Statuses worth another attempt: the server or something in front of it is overloaded or restarting. */
const TRANSIENT_STATUS = (status: number) => status >= 500 || status === 408 || status === 429;
const TRANSIENT_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
]);
const TIMEOUT_CODES: Record<string, string> = {
  UND_ERR_CONNECT_TIMEOUT: 'no connection',
  UND_ERR_HEADERS_TIMEOUT: 'no response',
  UND_ERR_BODY_TIMEOUT: 'no data',
};

/** The error's code, or its cause's (undici wraps some). */
function errorCode(err: unknown): string | undefined {
  const e = err as { code?: unknown; cause?: { code?: unknown } } | undefined;
  const code = e?.code ?? e?.cause?.code;
  return typeof code === 'string' ? code : undefined;
}

/** "timed out: no data for 30 s" for undici's timeouts, else the message (and code). */
function describeNetworkError(err: unknown, timeoutMs: number): string {
  const code = errorCode(err);
  const what = code ? TIMEOUT_CODES[code] : undefined;
  if (what) return `timed out: ${what} for ${timeoutMs / 1000} s`;
  const message = (err as Error)?.message ?? String(err);
  return code && !message.includes(code) ? `${message} (${code})` : message;
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
  headers: Record<string, string | string[] | undefined>;
  body: Readable;
}

interface Http {
  dispatcher: Dispatcher;
  timeoutMs: number;
}

/** GET with redirects followed; the caller consumes or destroys the body. */
async function get(http: Http, url: string, headers: Record<string, string>, redirects = 0): Promise<Response> {
  const u = new URL(url);
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new FetchError(`unsupported URL scheme: ${url}`);
  let res: Dispatcher.ResponseData;
  try {
    res = await request(u, { method: 'GET', dispatcher: http.dispatcher, headers: { 'user-agent': 'inceptiond', ...headers } });
  } catch (err) {
    throw new FetchError(
      `download of ${url} failed: ${describeNetworkError(err, http.timeoutMs)}`,
      TRANSIENT_CODES.has(errorCode(err) ?? ''),
    );
  }
  const status = res.statusCode;
  const location = res.headers.location;
  if (status >= 300 && status < 400 && typeof location === 'string') {
    res.body.resume();
    if (redirects >= MAX_REDIRECTS) throw new FetchError(`too many redirects fetching ${url}`);
    return get(http, new URL(location, u).toString(), headers, redirects + 1);
  }
  return { status, headers: res.headers, body: res.body };
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
async function download(http: Http, t: Target, part: string, logger: Logger | undefined, showBar: boolean): Promise<void> {
  let have = await fileSize(part);
  if (t.size !== undefined && have > t.size) {
    await rm(part, { force: true });
    have = 0;
  }
  // Opened before the request: from the response on, nothing may be awaited until the body's listeners
  // are attached, or a body cut off meanwhile would be gone unread (see receive()).
  const file = await open(part, 'a');
  try {
    const res = await get(http, t.url, have > 0 ? { range: `bytes=${have}-` } : {});
    let append = false;
    if (have > 0 && res.status === 206) {
      append = true;
      logger?.info({ url: t.url, offset: have }, 'resuming download');
    } else if (res.status === 416 && have > 0 && t.size === have) {
      res.body.resume(); // the .part is already complete
      return;
    } else if (res.status !== 200) {
      res.body.resume();
      throw new FetchError(`download of ${t.url} failed: HTTP ${res.status}`, TRANSIENT_STATUS(res.status));
    } else if (have > 0) {
      logger?.info({ url: t.url }, 'server ignored the range request: restarting the download');
    }
    await receive(http, t, res, file, append ? have : 0, logger, showBar);
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
  http: Http,
  t: Target,
  res: Response,
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
  let complete = false;
  /** A write to the disk failed: not a network problem, no retry. */
  let failed: Error | undefined;
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
      // undici ends a body with 'end' only when it is complete (its length checked): a cut-off or silent
      // one errors (or, destroyed, only closes).
      body.once('end', () => {
        complete = true;
        settle();
      });
      body.once('error', (err) => settle(err));
      body.once('close', () => settle(complete ? undefined : new Error('connection closed')));
    });
  } catch (err) {
    const why = describeNetworkError(err, http.timeoutMs);
    throw new FetchError(`download of ${t.url} interrupted after ${done} bytes (${why}); run again to resume`, err !== failed);
  } finally {
    bar?.stop();
  }
}

/** download(), again after a transient failure (resuming the .part), with exponential backoff. */
async function downloadWithRetries(http: Http, t: Target, part: string, opts: FetchOptions, logger: Logger | undefined): Promise<void> {
  const retries = Math.max(0, opts.retries ?? DEFAULT_RETRIES);
  const firstDelayMs = opts.retryDelayMs ?? DEFAULT_RETRY_DELAY_MS;
  const showBar = opts.progress ?? process.stderr.isTTY === true;
  for (let attempt = 1; ; attempt++) {
    try {
      await download(http, t, part, logger, showBar);
      return;
    } catch (err) {
      if (!(err instanceof FetchError) || !err.transient) throw err;
      if (attempt > retries) {
        throw new FetchError(retries > 0 ? `${err.message} (gave up after ${attempt} attempts)` : err.message, true);
      }
      const step = Math.min(MAX_RETRY_DELAY_MS, firstDelayMs * 2 ** (attempt - 1));
      const delayMs = Math.round(step * (0.8 + 0.4 * Math.random()));
      logger?.warn({ url: t.url, attempt, retries, delayMs, err: err.message }, `download failed, retrying in ${delayMs} ms`);
      await sleep(delayMs);
    }
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
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  // Read per call: HTTPS_PROXY/HTTP_PROXY/NO_PROXY (or lower case) as the environment says now.
  const dispatcher = new EnvHttpProxyAgent({ connect: { timeout: timeoutMs }, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
  try {
    await downloadWithRetries({ dispatcher, timeoutMs }, t, part, opts, logger);
  } finally {
    await dispatcher.close().catch(() => undefined);
  }

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
