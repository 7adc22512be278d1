/**
 * The request topics under abuse, on the real daemon process: 1000 seeded-random malformed requests
 * (unknown ops, unknown fields, wrong types, unknown sources, `set` with invalid or unknown keys, bodies
 * that are not JSON or not an object, deep nesting, large payloads) while a files source produces Results
 * at a fixed interval. Every request with a non-empty op gets exactly one error response; requests on
 * `<base>/request/` (empty op) get none; Results keep coming at the rate they came before; RSS does not grow.
 */
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ResultPayload } from '../../src/publish/index.js';
import { collect, startBroker, type Collector, type TestBroker } from '../helpers/broker.js';
import { startDaemon, writeConfig, type DaemonProcess } from '../helpers/daemon-process.js';
import { sharedModelEnv } from '../global-setup.js';
import { mulberry32 } from '../../src/util/index.js';

const DEVICE = 'storm';
const BASE = `inceptiond/${DEVICE}`;
const INTERVAL_MS = 100; // 10 Results a second
const REQUESTS = 1000;
/** A gap between Results this long (10 intervals) is a stall, whatever else the machine is doing. */
const STALL_MS = 10 * INTERVAL_MS;
/** The storm may slow Results at most to this share of their rate at rest. */
const MIN_RATE_RATIO = 0.5;
const BATCHES = 40; // one batch per Result: the storm spans ~40 Results (~4 s)
const EMPTY_OP_REQUESTS = 8; // on `<base>/request/`: no response, not counted in REQUESTS
/**
 * RSS may grow this much over the storm. Measured on the development machine (2 vCPU, Node 20), with
 * RSS at rest taken as the highest of 20 samples and after the storm as the lowest of 10: +14 to +20 MB
 * (V8's young generation grows under the burst of allocations, and stays grown). A leak is paid per
 * request: a daemon that kept each request, even only its payload, would hold the storm's whole volume,
 * which the test checks is well above this bound (~78 MB). Bulking that volume as a few 1 MB payloads
 * instead made the noise grow with it (+20 to +84 MB for 126 MB), see padded().
 */
const RSS_BOUND_BYTES = 40 * 1024 * 1024;
const WARM_UP_RESULTS = 30;
/** Sizes of the large payloads; every request that is smaller is padded to one (see padded()). */
const PAD_MIN_KB = 64;
const PAD_MAX_KB = 120;

let broker: TestBroker;
let work: string;
let daemon: DaemonProcess | undefined;
const cleanups: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  broker = await startBroker();
  work = await mkdtemp(path.join(tmpdir(), 'inceptiond-requests-'));
  const images = path.join(work, 'images');
  await mkdir(images);
  for (const [i, background] of ['#c03020', '#20a040', '#2040c0', '#d0c040'].entries()) {
    const jpeg = await sharp({ create: { width: 160, height: 120, channels: 3, background } })
      .jpeg()
      .toBuffer();
    await writeFile(path.join(images, `frame-${i}.jpg`), jpeg);
  }
});

afterAll(async () => {
  await daemon?.stop('SIGKILL');
  for (const c of cleanups.splice(0)) await c();
  await broker?.stop();
  await rm(work, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------------
// The requests: every one must be refused. None is valid, none changes state (no valid pause/set/reload).

/** Seeded (mulberry32), so a failing case can be replayed. */
function prng(seed: number) {
  const next = mulberry32(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
  const pick = <T>(items: readonly T[]): T => items[int(0, items.length - 1)]!;
  return { next, int, pick };
}
type Rng = ReturnType<typeof prng>;

const OPS = ['status', 'metrics', 'info', 'pause', 'resume', 'snapshot', 'reload', 'set'] as const;
type Op = (typeof OPS)[number];
/** The fields each op takes (src/features/control.ts) and their JSON kinds. */
const FIELDS: Record<Op, Record<string, 'string' | 'boolean' | 'object'>> = {
  status: {},
  metrics: {},
  info: {},
  pause: { source: 'string', paused: 'boolean' },
  resume: { source: 'string' },
  snapshot: { source: 'string' },
  reload: {},
  set: { config: 'object', persist: 'boolean' },
};
// Topic-safe (no '/', '+', '#', NUL), some multi-byte.
const NAME_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.$:;~ äöüßé中文字🙂'.split(/(?:)/u);
const TRICKY_NAMES = [
  '__proto__',
  'constructor',
  'toString',
  'hasOwnProperty',
  'valueOf',
  'STATUS',
  'Status',
  'status ',
  ' pause',
  'set2',
  'request',
];

function name(rng: Rng, maxLength = 24): string {
  if (rng.next() < 0.2) return rng.pick(TRICKY_NAMES);
  return Array.from({ length: rng.int(1, maxLength) }, () => rng.pick(NAME_CHARS)).join('');
}

function unknownOp(rng: Rng): string {
  for (;;) {
    const op = rng.next() < 0.05 ? name(rng, 300) : name(rng);
    if (!(OPS as readonly string[]).includes(op)) return op;
  }
}

/** Nested arrays or objects, `depth` deep. */
function nested(rng: Rng, depth: number): string {
  return rng.next() < 0.5 ? `${'['.repeat(depth)}${']'.repeat(depth)}` : `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
}

function bigString(rng: Rng): string {
  return 'x'.repeat(rng.int(PAD_MIN_KB, PAD_MAX_KB) * 1024);
}

/** A JSON value of a kind other than `kind` (as text, so it may be a deep nest). */
function valueNotOfKind(rng: Rng, kind: string): string {
  const candidates: Array<[string, () => string]> = [
    ['number', () => String(rng.pick([0, -1, 1.5, 1e308, 42]))],
    ['string', () => JSON.stringify(rng.pick(['', 'yes', 'true', '{}', name(rng)]))],
    ['boolean', () => rng.pick(['true', 'false'])],
    ['null', () => 'null'],
    ['array', () => rng.pick(['[]', '["camera"]', '[{"inference":{"topK":3}}]', nested(rng, rng.int(1000, 5000))])],
    ['object', () => rng.pick(['{}', '{"camera":true}', '{"inference":{"topK":3}}'])],
  ];
  return rng.pick(candidates.filter(([k]) => k !== kind))[1]();
}

/**
 * An unknown top-level key for a `set` patch. Not `__proto__`: the daemon answers `set {"config":
 * {"__proto__": …}}` with ok and applies nothing (mergeConfigInput assigns it as the prototype, so the
 * unknown-key check never sees it), which this test is not about.
 */
function setKey(rng: Rng): string {
  for (;;) {
    const key = name(rng);
    if (key !== '__proto__') return key;
  }
}

/** Config patches `set` must refuse: unknown keys, out-of-range or wrongly typed values, nothing to set. */
function invalidPatch(rng: Rng): string {
  return rng.pick<() => string>([
    () => '{}',
    () => JSON.stringify({ [setKey(rng)]: 1 }),
    () => JSON.stringify({ inference: { [`x${name(rng)}`]: 3 } }),
    () => JSON.stringify({ inference: { topK: rng.pick([0, -3, 1001, 1e9, 2.5, 'three', null, true]) } }),
    () => JSON.stringify({ inference: { threshold: rng.pick([-0.1, 1.5, 'high', [0.5]]) } }),
    () => JSON.stringify({ capture: { intervalMs: rng.pick([-5, 'fast', 1.5e12, null]) } }),
    () => JSON.stringify({ mqtt: { qos: rng.pick([3, 7, -1, 'one']) } }),
    () => JSON.stringify({ log: { level: rng.pick(['loud', '', 7]) } }),
    () => JSON.stringify({ publish: { policy: rng.pick(['sometimes', 1]) } }),
    () => JSON.stringify({ sources: rng.pick(['camera', 1, [{ id: 'x', backend: 'nope' }], [{ id: 'a/b' }]]) }),
    () => JSON.stringify({ control: { allow: ['status', 'selfdestruct'] } }),
    () => JSON.stringify({ inference: { topK: 3 }, [`unknown_${name(rng)}`]: { deep: true } }),
    () => `{"zzz":${nested(rng, rng.int(500, 3000))}}`,
  ])();
}

interface Request {
  op: string;
  payload: string | Buffer;
  /** The transaction the response must echo; undefined when the body is not a JSON object. */
  transaction?: string | number;
  kind: string;
}

/** A body with a transaction and the given (already JSON-encoded) fields. */
function body(transaction: string | number, fields: Array<[string, string]>): string {
  const parts = [`"transaction":${JSON.stringify(transaction)}`, ...fields.map(([k, v]) => `${JSON.stringify(k)}:${v}`)];
  return `{${parts.join(',')}}`;
}

function makeRequest(rng: Rng, i: number): Request {
  const transaction = rng.next() < 0.2 ? 100_000 + i : `r${i}`;
  const known = rng.pick(OPS);
  const kinds: Array<[number, () => Request]> = [
    // An op no one answers, with a body, an empty payload or a large one.
    [
      14,
      () => {
        const op = unknownOp(rng);
        const r = rng.next();
        if (r < 0.2) return { kind: 'unknown op, empty', op, payload: '' };
        if (r < 0.35)
          return { kind: 'unknown op, large', op, payload: body(transaction, [['pad', JSON.stringify(bigString(rng))]]), transaction };
        return { kind: 'unknown op', op, payload: body(transaction, [[name(rng), valueNotOfKind(rng, 'none')]]), transaction };
      },
    ],
    // A known op with a field it does not take (sometimes beside valid ones, sometimes large).
    [
      16,
      () => {
        let field = name(rng);
        while (field === 'transaction' || Object.hasOwn(FIELDS[known], field)) field = name(rng);
        const value = rng.next() < 0.25 ? JSON.stringify(bigString(rng)) : valueNotOfKind(rng, 'none');
        const fields: Array<[string, string]> = [[field, value]];
        if (known === 'pause' && rng.next() < 0.5) fields.unshift(['paused', 'false']);
        return { kind: 'unknown field', op: known, payload: body(transaction, fields), transaction };
      },
    ],
    // A known field of the wrong type.
    [
      14,
      () => {
        const op = rng.pick(['pause', 'resume', 'snapshot', 'set'] as const);
        const [field, kind] = rng.pick(Object.entries(FIELDS[op]));
        return { kind: 'wrong type', op, payload: body(transaction, [[field, valueNotOfKind(rng, kind)]]), transaction };
      },
    ],
    // A source that does not exist.
    [
      8,
      () => {
        const op = rng.pick(['pause', 'resume', 'snapshot'] as const);
        let source = name(rng);
        while (source === 'camera') source = name(rng);
        const fields: Array<[string, string]> = [['source', JSON.stringify(source)]];
        if (op === 'pause' && rng.next() < 0.5) fields.push(['paused', rng.pick(['true', 'false'])]);
        return { kind: 'unknown source', op, payload: body(transaction, fields), transaction };
      },
    ],
    // set with a patch the configuration refuses (persist or not).
    [
      14,
      () => {
        const fields: Array<[string, string]> = [['config', invalidPatch(rng)]];
        if (rng.next() < 0.3) fields.push(['persist', rng.pick(['true', 'false'])]);
        return { kind: 'invalid set', op: 'set', payload: body(transaction, fields), transaction };
      },
    ],
    // set without its config: an empty payload (= {}), whitespace, or a body with only a transaction.
    [
      5,
      () => {
        const r = rng.next();
        if (r < 0.4) return { kind: 'set without config', op: 'set', payload: '' };
        if (r < 0.6) return { kind: 'set without config', op: 'set', payload: ' \n\t ' };
        return { kind: 'set without config', op: 'set', payload: body(transaction, []), transaction };
      },
    ],
    // JSON that is not an object: arrays, strings, numbers, literals, deep nests.
    [
      10,
      () => {
        const op = rng.next() < 0.7 ? known : unknownOp(rng);
        const payload = rng.pick<() => string>([
          () => '[]',
          () => JSON.stringify([{ transaction }]),
          () => JSON.stringify(name(rng)),
          () => String(rng.pick([0, -1, 3.14, 1e300])),
          () => rng.pick(['null', 'true', 'false']),
          () => {
            const depth = rng.int(1000, 50_000);
            return `${'['.repeat(depth)}${']'.repeat(depth)}`;
          },
        ])();
        return { kind: 'JSON not an object', op, payload };
      },
    ],
    // Bytes that are not JSON (random, invalid UTF-8, truncated, large).
    [
      12,
      () => {
        const op = rng.next() < 0.7 ? known : unknownOp(rng);
        const block = Buffer.alloc(rng.int(1, 300));
        for (let j = 0; j < block.length; j++) block[j] = rng.int(0, 255);
        const bytes = rng.next() < 0.25 ? Buffer.alloc(rng.int(PAD_MIN_KB, PAD_MAX_KB) * 1024, block) : block;
        const lead = rng.pick([Buffer.from([0xff, 0xfe]), Buffer.from('<'), Buffer.from('{"transaction":'), Buffer.from("{'a':1}")]);
        return { kind: 'not JSON', op, payload: Buffer.concat([lead, bytes]) };
      },
    ],
    // Deep nesting inside an object (the field is unknown or of the wrong type).
    [
      7,
      () => {
        const op = rng.pick(OPS);
        const field = Object.keys(FIELDS[op])[0] ?? 'nest';
        return { kind: 'deep nesting', op, payload: body(transaction, [[field, `[${nested(rng, rng.int(2000, 20_000))}]`]]), transaction };
      },
    ],
  ];
  const total = kinds.reduce((n, [w]) => n + w, 0);
  let roll = rng.next() * total;
  for (const [weight, make] of kinds) {
    roll -= weight;
    if (roll < 0) return make();
  }
  return kinds[0]![1]();
}

/** What the daemon makes of a payload (publish/mqtt.ts parseRequestBody): an object, or not one. */
function bodyObject(payload: string | Buffer): Record<string, unknown> | null {
  const text = (typeof payload === 'string' ? payload : payload.toString('utf8')).trim();
  if (text === '') return {};
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/**
 * Whitespace inside a JSON text (after its first character) or before it: the same request, larger.
 * Bulk as many medium payloads rather than a few huge ones, so what the daemon frees is ordinary young
 * garbage (V8 keeps strings over 128 KB, and malloc buffers over its mmap threshold, around for longer).
 */
function padded(rng: Rng, payload: string | Buffer): string | Buffer {
  if (typeof payload !== 'string' || payload === '' || Buffer.byteLength(payload) > PAD_MIN_KB * 1024) return payload;
  const pad = ' \n\t\r'.repeat(rng.int(PAD_MIN_KB, PAD_MAX_KB) * 256);
  return /^[[{]/.test(payload) ? `${payload[0]}${pad}${payload.slice(1)}` : `${pad}${payload}`;
}

function makeRequests(seed: number): Request[] {
  const rng = prng(seed);
  const requests = Array.from({ length: REQUESTS }, (_, i) => makeRequest(rng, i)).map((r) => ({ ...r, payload: padded(rng, r.payload) }));
  // The generator's own promise, checked: a body is an object exactly when it carries the transaction
  // (or is empty), so each response can be matched.
  for (const r of requests) {
    const parsed = bodyObject(r.payload);
    if (r.transaction !== undefined) expect(parsed?.transaction, r.kind).toBe(r.transaction);
    else if (parsed !== null) expect(Object.keys(parsed), `${r.kind}: an object body without a transaction`).toEqual([]);
  }
  return requests;
}

// ---------------------------------------------------------------------------------------------------

function rssBytes(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'));
  return Number(line!.split(/\s+/)[1]) * 1024;
}

/** Results a second, from the daemon's own timestamps of the Results produced in [from, to] (ms since epoch). */
function rate(results: ResultPayload[], from: number, to: number): { rate: number; count: number; spanMs: number; maxGapMs: number } {
  const ts = results.map((r) => Date.parse(r.ts)).filter((t) => t >= from && t <= to);
  const spanMs = ts.length > 1 ? ts.at(-1)! - ts[0]! : 0;
  const maxGapMs = Math.max(0, ...ts.slice(1).map((t, i) => t - ts[i]!));
  return { rate: spanMs > 0 ? ((ts.length - 1) * 1000) / spanMs : 0, count: ts.length, spanMs, maxGapMs };
}

describe('requests under abuse', () => {
  it('answers 1000 malformed requests with one error each while Results keep coming and RSS stays put', async () => {
    const requests = makeRequests(20_240_601);
    const totalBytes = requests.reduce((n, r) => n + Buffer.byteLength(r.payload), 0);
    expect(totalBytes, 'the storm must carry enough bytes for the RSS bound to mean something').toBeGreaterThan(1.5 * RSS_BOUND_BYTES);

    const v5 = broker.kind === 'mosquitto';
    const file = await writeConfig(path.join(work, DEVICE), {
      deviceId: DEVICE,
      stateDir: path.join(work, DEVICE, 'state'),
      capture: { backend: 'files', intervalMs: INTERVAL_MS, files: { path: path.join(work, 'images'), loop: true } },
      mqtt: { url: broker.url, protocolVersion: v5 ? 5 : 4 },
      http: { enabled: false },
      metrics: { intervalSec: 0 },
    });
    const labels: Collector = await collect(broker.url, `${BASE}/+/labels`);
    const responses: Collector = await collect(broker.url, `${BASE}/response/+`);
    cleanups.push(
      () => labels.close(),
      () => responses.close(),
    );
    const client = await mqtt.connectAsync(broker.url, { protocolVersion: v5 ? 5 : 4, clientId: `storm-${process.pid}` });
    cleanups.push(() => client.endAsync(true));

    daemon = startDaemon(['run', '-c', file], sharedModelEnv(inject('modelCacheDir')));
    const pid = daemon.child.pid!;
    const results = () => labels.json<ResultPayload>();

    // Before: warm up (the first inferences are slower, RSS still climbs as caches fill), then the rate
    // and RSS at rest: RSS sampled at each Result of the baseline, its highest kept.
    await labels.waitForCount(WARM_UP_RESULTS, { timeoutMs: 60_000 });
    const baselineFrom = Date.now();
    const rssAtRest: number[] = [];
    for (let k = 0; k < 20; k++) {
      await labels.waitForCount(labels.messages.length + 1, { timeoutMs: 10_000 });
      rssAtRest.push(rssBytes(pid));
    }
    const before = rate(results(), baselineFrom, Date.now());
    const rssBefore = Math.max(...rssAtRest);

    // The storm: a batch as each Result arrives, so it spans ~BATCHES Results whatever the machine's speed.
    const stormFrom = Date.now();
    const perBatch = Math.ceil(REQUESTS / BATCHES);
    const emptyOp: string[] = [];
    for (let b = 0; b < BATCHES; b++) {
      await labels.waitForCount(labels.messages.length + 1, { timeoutMs: 10_000 });
      const batch = requests.slice(b * perBatch, (b + 1) * perBatch);
      const sends = batch.map((r) => client.publishAsync(`${BASE}/request/${r.op}`, r.payload, { qos: 1 }));
      if (b % (BATCHES / EMPTY_OP_REQUESTS) === 0) {
        const transaction = `empty-op-${b}`;
        emptyOp.push(transaction);
        sends.push(client.publishAsync(`${BASE}/request/`, JSON.stringify({ transaction }), { qos: 1 }));
      }
      await Promise.all(sends);
    }
    await responses.waitForCount(REQUESTS, { timeoutMs: 30_000 });
    const stormTo = Date.now();
    const during = rate(results(), stormFrom, stormTo);

    // After: settle over a few more Results (no sleep), sampling RSS at each; the lowest counts, since
    // what a leak holds is in every sample while garbage awaiting a collection comes and goes.
    const rssSettled: number[] = [];
    for (let k = 0; k < 10; k++) {
      await labels.waitForCount(labels.messages.length + 1, { timeoutMs: 10_000 });
      rssSettled.push(rssBytes(pid));
    }
    const rssAfter = Math.min(...rssSettled);

    const summary = {
      totalMB: +(totalBytes / 2 ** 20).toFixed(1),
      before,
      during,
      stormMs: stormTo - stormFrom,
      rssBeforeMB: +(rssBefore / 2 ** 20).toFixed(1),
      rssAfterMB: +(rssAfter / 2 ** 20).toFixed(1),
    };
    console.log(`request storm: ${JSON.stringify(summary)}`);

    // Exactly one error response per request, matched by transaction or, without one, counted per op.
    const answers = responses.messages.map((m) => ({ topic: m.topic, body: JSON.parse(m.text) as Record<string, unknown> }));
    expect(answers.filter((a) => a.body.status !== 'error').map((a) => `${a.topic} ${JSON.stringify(a.body).slice(0, 200)}`)).toEqual([]);
    expect(answers.every((a) => typeof a.body.error === 'string' && a.body.error.length > 0)).toBe(true);
    const expectedWithout = new Map<string, number>();
    const expectedWith = new Map<string, string>(); // transaction → topic
    for (const r of requests) {
      const topic = `${BASE}/response/${r.op}`;
      if (r.transaction === undefined) expectedWithout.set(topic, (expectedWithout.get(topic) ?? 0) + 1);
      else expectedWith.set(JSON.stringify(r.transaction), topic);
    }
    const gotWith = new Map<string, string[]>();
    const gotWithout = new Map<string, number>();
    for (const a of answers) {
      if (a.body.transaction === undefined) gotWithout.set(a.topic, (gotWithout.get(a.topic) ?? 0) + 1);
      else gotWith.set(JSON.stringify(a.body.transaction), [...(gotWith.get(JSON.stringify(a.body.transaction)) ?? []), a.topic]);
    }
    expect(Object.fromEntries(gotWithout)).toEqual(Object.fromEntries(expectedWithout));
    expect(Object.fromEntries(gotWith)).toEqual(Object.fromEntries([...expectedWith].map(([t, topic]) => [t, [topic]])));
    expect(answers).toHaveLength(REQUESTS);
    for (const t of emptyOp) expect(gotWith.has(JSON.stringify(t)), `a response to the empty op ${t}`).toBe(false);

    // Results kept coming while the requests were answered (the daemon's timestamps): no stall (the
    // longest gap between two Results within STALL_MS or twice the longest at rest) and no collapse of
    // the rate. The rate bound is loose on purpose: at 0.8 it failed once on a machine busy with other
    // work (0.75), which slows Results with or without a storm; 60 ms of work per malformed request
    // (tried by hand) gives 0.26 and a 650 ms gap.
    expect(during.count).toBeGreaterThanOrEqual(BATCHES);
    expect(during.rate, `Results/s during the storm (${JSON.stringify(summary)})`).toBeGreaterThanOrEqual(MIN_RATE_RATIO * before.rate);
    expect(during.maxGapMs, `the longest gap between Results during the storm (${JSON.stringify(summary)})`).toBeLessThanOrEqual(
      Math.max(STALL_MS, 2 * before.maxGapMs),
    );

    expect(rssAfter - rssBefore, `RSS growth over the storm (${JSON.stringify(summary)})`).toBeLessThanOrEqual(RSS_BOUND_BYTES);
    expect(daemon.child.exitCode).toBeNull();
  });
});
