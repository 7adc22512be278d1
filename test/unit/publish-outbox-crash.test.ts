// Crash consistency of the outbox: every cut of the last writes (segment and cursor), flipped bytes,
// and a child process appending with fsyncIntervalMs 0 killed with SIGKILL again and again. After each,
// everything acknowledged before the crash must be there, in order, and nothing damaged delivered.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Outbox, type OutboxEntry } from '../../src/publish/outbox.js';
import { SeqStore } from '../../src/publish/seq.js';
import { mulberry32 } from '../../src/util/index.js';

const root = resolve(import.meta.dirname, '../..');
const logger = pino({ level: 'silent' });
const roomy = { maxMessages: 100_000, maxBytes: 1e9, maxAgeSec: 0 };
const counts = { cuts: 0, flips: 0, kills: 0, recovered: 0, corruptDelivered: 0 };
let compiled: string;

const payloadFor = (i: number) => `{"n":${i},"pad":"${'x'.repeat(i % 7)}"}`;

function all(outbox: Outbox): OutboxEntry[] {
  return outbox.nextBatch(0, 1_000_000);
}

/** Asserts that `entries` are in strictly increasing id order and each carries exactly what was appended under its id. */
function assertIntact(entries: OutboxEntry[], expected: Map<number, string>): void {
  for (let i = 1; i < entries.length; i++) expect(entries[i]!.id).toBeGreaterThan(entries[i - 1]!.id);
  for (const e of entries) {
    if (expected.get(e.id) !== e.payload) counts.corruptDelivered++;
    expect(e.payload).toBe(expected.get(e.id));
  }
}

async function segmentsOf(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((f) => /^seg-\d+\.jsonl$/.test(f)).sort();
}

beforeAll(async () => {
  await mkdir(join(root, 'tmp'), { recursive: true });
  compiled = await mkdtemp(join(root, 'tmp', 'outbox-crash-'));
  await promisify(execFile)(
    join(root, 'node_modules/.bin/tsc'),
    [
      ...['--outDir', compiled, '--rootDir', join(root, 'src'), '--module', 'NodeNext', '--moduleResolution', 'NodeNext'],
      ...['--target', 'ES2022', '--strict', '--skipLibCheck', '--types', 'node'],
      join(root, 'src/publish/seq.ts'),
    ],
    { cwd: root },
  );
  await writeFile(join(compiled, 'child.mjs'), CHILD);
});

afterAll(async () => {
  if (compiled) await rm(compiled, { recursive: true, force: true });
  console.log(`outbox crash test: ${JSON.stringify(counts)}`);
});

describe('outbox crash consistency', () => {
  it('every cut of the last writes of a segment keeps every whole record before the cut, in order', async () => {
    const base = await mkdtemp(join(tmpdir(), 'outbox-cut-'));
    const src = join(base, 'src');
    const outbox = await Outbox.open(src, { ...roomy, fsyncIntervalMs: 0 }, logger);
    const expected = new Map<number, string>();
    const ends: { id: number; end: number }[] = [];
    for (let i = 1; i <= 12; i++) {
      const id = await outbox.append({ topic: 't', payload: payloadFor(i), qos: 1 });
      expected.set(id, payloadFor(i));
      const [segment] = await segmentsOf(src);
      ends.push({ id, end: (await readFile(join(src, segment!))).length }); // synced: append resolved after fdatasync
    }
    // Not closed: this is the state a power cut after the last fdatasync leaves.
    const [segment] = await segmentsOf(src);
    const full = await readFile(join(src, segment!));
    const from = ends[ends.length - 6]!.end; // the last five writes, every byte offset
    for (let cut = from; cut <= full.length; cut++) {
      const dir = join(base, `cut-${cut}`);
      await cp(src, dir, { recursive: true });
      await truncate(join(dir, segment!), cut);
      const reopened = await Outbox.open(dir, roomy, logger);
      const entries = all(reopened);
      const whole = ends.filter((e) => e.end <= cut).map((e) => e.id);
      expect(entries.map((e) => e.id)).toEqual(whole);
      assertIntact(entries, expected);
      expect(reopened.corrupt).toBe(ends.some((e) => e.end === cut) ? 0 : 1);
      counts.cuts++;
      counts.recovered += entries.length;
      // And it keeps working: the next id is new, and written after what survived.
      const next = await reopened.append({ topic: 't', payload: 'after', qos: 1 });
      expect(next).toBeGreaterThan(Math.max(0, ...whole));
      await reopened.close();
      await rm(dir, { recursive: true });
    }
    await outbox.close();
  });

  it('every cut of the cursor file re-sends at worst, never skips an unacknowledged entry', async () => {
    const base = await mkdtemp(join(tmpdir(), 'outbox-cursor-'));
    const src = join(base, 'src');
    const outbox = await Outbox.open(src, { ...roomy, fsyncIntervalMs: 0 }, logger);
    const expected = new Map<number, string>();
    const ids: number[] = [];
    for (let i = 1; i <= 130; i++) {
      const id = await outbox.append({ topic: 't', payload: payloadFor(i), qos: 1 });
      expected.set(id, payloadFor(i));
      ids.push(id);
    }
    for (const id of ids.slice(0, 123)) outbox.ack(id);
    await outbox.close(); // persists the cursor: "123\n"
    const cursorText = await readFile(join(src, 'ack'));
    expect(cursorText.toString()).toBe('123\n');
    for (let cut = 0; cut <= cursorText.length; cut++) {
      const dir = join(base, `cut-${cut}`);
      await cp(src, dir, { recursive: true });
      await truncate(join(dir, 'ack'), cut);
      const reopened = await Outbox.open(dir, roomy, logger);
      const entries = all(reopened);
      expect(entries.slice(-7).map((e) => e.id)).toEqual(ids.slice(123)); // the unacknowledged ones, last, in order
      assertIntact(entries, expected);
      counts.cuts++;
      counts.recovered += entries.length;
      await reopened.close();
      await rm(dir, { recursive: true });
    }
  });

  it('a flipped byte anywhere is caught by the checksum: nothing damaged is delivered, the rest is', async () => {
    const base = await mkdtemp(join(tmpdir(), 'outbox-flip-'));
    const src = join(base, 'src');
    const outbox = await Outbox.open(src, { ...roomy, fsyncIntervalMs: 0 }, logger);
    const expected = new Map<number, string>();
    for (let i = 1; i <= 30; i++) expected.set(await outbox.append({ topic: 't', payload: payloadFor(i), qos: 1 }), payloadFor(i));
    await outbox.close();
    const [segment] = await segmentsOf(src);
    const full = await readFile(join(src, segment!));
    const random = mulberry32(0xc0ffee);
    for (let trial = 0; trial < 150; trial++) {
      const dir = join(base, `flip-${trial}`);
      await cp(src, dir, { recursive: true });
      const damaged = Buffer.from(full);
      const at = Math.floor(random() * damaged.length);
      damaged[at]! ^= 1 + Math.floor(random() * 255);
      await writeFile(join(dir, segment!), damaged);
      const reopened = await Outbox.open(dir, { ...roomy, hotBytes: 0 }, logger);
      const entries = all(reopened);
      assertIntact(entries, expected);
      // One line damaged, or two merged when a newline was hit.
      expect(entries.length).toBeGreaterThanOrEqual(expected.size - 2);
      counts.flips++;
      counts.recovered += entries.length;
      await reopened.close();
      await rm(dir, { recursive: true });
    }
  });

  it('SIGKILL at random moments: every acknowledged append survives, in order, and the seq never goes back', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'outbox-kill9-'));
    const random = mulberry32(0x5eed);
    const expected = new Map<number, string>();
    const childAcked = new Set<number>();
    let maxSeq = 0;
    for (let round = 0; round < 8; round++) {
      const target = 20 + Math.floor(random() * 300);
      const child = spawn(process.execPath, [join(compiled, 'child.mjs'), dir], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      let acknowledged = 0;
      await new Promise<void>((done, fail) => {
        let buffered = '';
        child.stdout!.on('data', (d: Buffer) => {
          buffered += d.toString();
          const lines = buffered.split('\n');
          buffered = lines.pop()!;
          for (const line of lines) {
            const [kind, id, seq, payload] = line.split(' ');
            if (kind === 'appended') {
              expected.set(Number(id), payload!);
              maxSeq = Math.max(maxSeq, Number(seq));
              if (++acknowledged === target) {
                child.kill('SIGKILL');
                done();
              }
            } else if (kind === 'acked') childAcked.add(Number(id));
          }
        });
        child.once('exit', (code, signal) => signal !== 'SIGKILL' && fail(new Error(`child exited (${code}): ${stderr}`)));
      });
      await exited(child);
      counts.kills++;

      const outbox = await Outbox.open(dir, roomy, logger);
      const entries = all(outbox);
      // Appended but killed before it reported: not promised, but if there, it must be intact.
      const known = new Map(entries.map((e) => [e.id, expected.get(e.id) ?? (e.payload as string)]));
      assertIntact(entries, known);
      for (const e of entries) expect(e.payload).toMatch(/^r\d+-y*$/);
      const present = new Set(entries.map((e) => e.id));
      const missing = [...expected.keys()].filter((id) => !childAcked.has(id) && !present.has(id));
      expect(missing).toEqual([]);
      counts.recovered += entries.length;
      const seq = SeqStore.open(dir, outbox, logger);
      expect(seq.current('cam')).toBeGreaterThanOrEqual(maxSeq);
      seq.close();
      await outbox.close();
    }
  });
});

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once('exit', () => r()));
}

// Appends as fast as it can (four in flight, so writes are grouped), with fsyncIntervalMs 0 and small
// segments; reports each append once it resolved, and each ack before making it, with a synchronous
// write to the pipe (so a report made is a report the parent gets, even when killed right after).
const CHILD = `
import { writeSync } from 'node:fs';
import { Outbox } from './publish/outbox.js';
import { SeqStore } from './publish/seq.js';
const [dir] = process.argv.slice(2);
const quiet = { info() {}, warn() {}, error() {}, debug() {} };
const outbox = await Outbox.open(dir, { maxMessages: 100000, maxBytes: 1e9, maxAgeSec: 0, fsyncIntervalMs: 0, segmentBytes: 4096, cursorFlushMs: 5 }, quiet);
const seq = SeqStore.open(dir, outbox, quiet);
let n = 0;
async function worker() {
  for (;;) {
    const s = seq.next('cam');
    const payload = 'r' + s + '-' + 'y'.repeat(++n % 50);
    const id = await outbox.append({ topic: 't', payload, qos: 1 });
    writeSync(1, 'appended ' + id + ' ' + s + ' ' + payload + '\\n');
    if (id % 3 === 0 && id > 10) {
      writeSync(1, 'acked ' + (id - 10) + '\\n');
      outbox.ack(id - 10);
    }
  }
}
await Promise.all([worker(), worker(), worker(), worker()]);
`;
