import { appendFile, mkdir, mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Outbox, type OutboxDrop, type OutboxOptions } from '../../src/publish/outbox.js';
import { SeqStore } from '../../src/publish/seq.js';

const logger = pino({ level: 'silent' });
const roomy: OutboxOptions = { maxMessages: 10_000, maxBytes: 10_000_000, maxAgeSec: 0 };
const opened: Outbox[] = [];

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'inceptiond-outbox-'));
}

async function openOutbox(dir: string, options: Partial<OutboxOptions> = {}): Promise<Outbox> {
  const outbox = await Outbox.open(dir, { ...roomy, ...options }, logger);
  opened.push(outbox);
  return outbox;
}

async function appendMany(outbox: Outbox, from: number, to: number): Promise<number[]> {
  const ids: number[] = [];
  for (let i = from; i <= to; i++) ids.push(await outbox.append({ topic: 't/labels', payload: `m${i}`, qos: 1 }));
  return ids;
}

const payloads = (outbox: Outbox) => outbox.nextBatch(0, 1_000_000).map((e) => e.payload);

afterEach(async () => {
  vi.useRealTimers();
  await Promise.all(opened.splice(0).map((o) => o.close()));
});

describe('Outbox', () => {
  it('hands out entries in append order with increasing ids', async () => {
    const outbox = await openOutbox(await tempDir());
    const ids = await Promise.all([1, 2, 3, 4, 5].map((i) => outbox.append({ topic: 't', payload: `m${i}`, qos: 1 })));
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect(new Set(ids).size).toBe(5);
    expect(payloads(outbox)).toEqual(['m1', 'm2', 'm3', 'm4', 'm5']);
    expect(outbox.nextBatch(ids[1]!, 2).map((e) => e.payload)).toEqual(['m3', 'm4']);
    expect(outbox.depth).toBe(5);
  });

  it('advances the cursor only over the contiguous acknowledged prefix', async () => {
    const outbox = await openOutbox(await tempDir());
    const [a, b, c, d] = await appendMany(outbox, 1, 5);
    outbox.ack(b!);
    outbox.ack(c!);
    expect(outbox.ackedThrough).toBe(a! - 1);
    expect(payloads(outbox)).toEqual(['m1', 'm4', 'm5']);
    outbox.ack(a!);
    expect(outbox.ackedThrough).toBe(c);
    outbox.ack(a!); // repeated ack is harmless
    expect(outbox.depth).toBe(2);
    expect(outbox.nextBatch(0, 10).map((e) => e.id)).toEqual([d, d! + 1]);
  });

  it('drops the oldest entries beyond maxMessages, counts them and reports them', async () => {
    const drops: OutboxDrop[] = [];
    const outbox = await openOutbox(await tempDir(), { maxMessages: 3, onDrop: (d) => drops.push(d) });
    await appendMany(outbox, 1, 5);
    expect(payloads(outbox)).toEqual(['m3', 'm4', 'm5']);
    expect(outbox.dropped).toBe(2);
    expect(drops.reduce((n, d) => n + d.count, 0)).toBe(2);
    expect(drops.every((d) => d.reason === 'maxMessages')).toBe(true);
    expect(drops.at(-1)!.totalDropped).toBe(2);
  });

  it('drops the oldest entries beyond maxBytes', async () => {
    const dir = await tempDir();
    const probe = await openOutbox(join(dir, 'probe'));
    await probe.append({ topic: 't', payload: 'x'.repeat(100), qos: 1 });
    const oneRecord = probe.bytes;

    const outbox = await openOutbox(join(dir, 'real'), { maxBytes: oneRecord * 2 });
    for (let i = 0; i < 4; i++) await outbox.append({ topic: 't', payload: String(i).repeat(100), qos: 1 });
    expect(outbox.depth).toBe(2);
    expect(outbox.bytes).toBeLessThanOrEqual(oneRecord * 2);
    expect(outbox.dropped).toBe(2);
    expect(payloads(outbox)).toEqual(['2'.repeat(100), '3'.repeat(100)]);
  });

  it('drops entries older than maxAgeSec', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const drops: OutboxDrop[] = [];
    const outbox = await openOutbox(await tempDir(), { maxAgeSec: 60, onDrop: (d) => drops.push(d) });
    await appendMany(outbox, 1, 2);
    vi.setSystemTime(Date.now() + 61_000);
    await appendMany(outbox, 3, 3);
    expect(payloads(outbox)).toEqual(['m3']);
    expect(drops).toMatchObject([{ reason: 'maxAge', count: 2 }]);
  });

  it('rejects bad entries with a clear error and keeps working', async () => {
    const outbox = await openOutbox(await tempDir());
    await expect(outbox.append({ topic: '', payload: 'x', qos: 1 })).rejects.toThrow(/topic/);
    await expect(outbox.append({ topic: 'a/#', payload: 'x', qos: 1 })).rejects.toThrow(/wildcard/);
    await expect(outbox.append({ topic: 'a', payload: 'x', qos: 3 as 1 })).rejects.toThrow(/qos/);
    await expect(outbox.append({ topic: 'a', payload: 42 as unknown as string, qos: 1 })).rejects.toThrow(/payload/);
    await outbox.append({ topic: 'a', payload: 'ok', qos: 1 });
    expect(payloads(outbox)).toEqual(['ok']);
  });

  it('resumes the unacknowledged entries in order after close and reopen, ids continuing', async () => {
    const dir = await tempDir();
    const first = await Outbox.open(dir, roomy, logger);
    const ids = await appendMany(first, 1, 4);
    await first.append({ topic: 't/snapshot', payload: Buffer.from([0, 255, 1]), qos: 0, retain: true });
    first.ack(ids[0]!);
    first.ack(ids[1]!);
    await first.close();
    await expect(first.append({ topic: 't', payload: 'late', qos: 1 })).rejects.toThrow(/closed/);

    const second = await openOutbox(dir);
    const pending = second.nextBatch(0, 100);
    expect(pending.map((e) => e.payload)).toEqual(['m3', 'm4', Buffer.from([0, 255, 1])]);
    expect(pending[2]).toMatchObject({ qos: 0, retain: true, topic: 't/snapshot' });
    const next = await second.append({ topic: 't', payload: 'm6', qos: 1 });
    expect(next).toBeGreaterThan(pending[2]!.id);
  });

  it('after a crash (no close) keeps every unacknowledged entry and skips a torn final record', async () => {
    const dir = await tempDir();
    const crashed = await Outbox.open(dir, roomy, logger); // never closed: like kill -9 after write(2)
    const ids = await appendMany(crashed, 1, 5);
    crashed.ack(ids[0]!);
    const [segment] = (await readdir(dir)).filter((f) => f.startsWith('seg-'));
    await appendFile(join(dir, segment!), '{"id":99,"ts":1,"topic":"t","qo'); // torn mid-record

    const reopened = await openOutbox(dir);
    expect(reopened.corrupt).toBe(1);
    const after = payloads(reopened);
    // The ack cursor is persisted lazily: m1 may come again (at-least-once), the rest must.
    expect(after.slice(-4)).toEqual(['m2', 'm3', 'm4', 'm5']);
    const id = await reopened.append({ topic: 't', payload: 'm6', qos: 1 });
    expect(id).toBe(ids[4]! + 1);
    await reopened.close();
    expect(payloads(await openOutbox(dir)).slice(-5)).toEqual(['m2', 'm3', 'm4', 'm5', 'm6']);
  });

  it('survives an unreadable ack cursor by re-sending what is stored', async () => {
    const dir = await tempDir();
    const first = await Outbox.open(dir, roomy, logger);
    const ids = await appendMany(first, 1, 3);
    first.ack(ids[0]!);
    await first.close();
    await writeFile(join(dir, 'ack'), 'garbage');
    expect(payloads(await openOutbox(dir))).toEqual(['m1', 'm2', 'm3']);
  });

  it('rotates segments and deletes them once acknowledged', async () => {
    const dir = await tempDir();
    const outbox = await Outbox.open(dir, { ...roomy, segmentBytes: 200 }, logger);
    const ids = await appendMany(outbox, 1, 30);
    const segmentsBefore = (await readdir(dir)).filter((f) => f.startsWith('seg-'));
    expect(segmentsBefore.length).toBeGreaterThan(3);
    for (const id of ids.slice(0, 29)) outbox.ack(id);
    await outbox.append({ topic: 't', payload: 'm31', qos: 1 }); // forces a rotation past the full segment
    await outbox.close();
    const segmentsAfter = (await readdir(dir)).filter((f) => f.startsWith('seg-'));
    expect(segmentsAfter.length).toBeLessThanOrEqual(2);
    expect(Number((await readFile(join(dir, 'ack'), 'utf8')).trim())).toBe(ids[28]);
    expect(payloads(await openOutbox(dir))).toEqual(['m30', 'm31']);
  });
});

describe('Outbox durability', () => {
  /** Counts fdatasync calls, and fails writes with `code` while `failing` is set. */
  function faultyIo() {
    const io = {
      syncs: 0,
      failing: null as string | null,
      write: (fh: FileHandle, data: Buffer, offset: number, length: number) => {
        if (io.failing) return Promise.reject(Object.assign(new Error(`${io.failing}: simulated`), { code: io.failing }));
        return fh.write(data, offset, length);
      },
      datasync: (fh: FileHandle) => {
        io.syncs++;
        return fh.datasync();
      },
    };
    return io;
  }

  it('fsyncIntervalMs 0 fdatasyncs before each append resolves; the interval does not', async () => {
    const io = faultyIo();
    const perResult = await openOutbox(await tempDir(), { fsyncIntervalMs: 0, io });
    for (let i = 1; i <= 3; i++) {
      const before = io.syncs;
      await perResult.append({ topic: 't', payload: `m${i}`, qos: 1 });
      expect(io.syncs).toBe(before + 1);
    }
    const lazy = faultyIo();
    const interval = await openOutbox(await tempDir(), { fsyncIntervalMs: 60_000, io: lazy });
    const before = lazy.syncs;
    await appendMany(interval, 1, 3);
    expect(lazy.syncs).toBe(before);
  });

  it('syncs a segment when it rotates, whatever the interval', async () => {
    const io = faultyIo();
    const outbox = await openOutbox(await tempDir(), { fsyncIntervalMs: 60_000, segmentBytes: 200, io });
    const before = io.syncs;
    await appendMany(outbox, 1, 20);
    // Each rotation syncs the closed segment and the new one's header.
    expect(io.syncs - before).toBeGreaterThanOrEqual(2 * 5);
  });

  it('skips a record whose checksum does not match, at open and when read back, and counts it', async () => {
    const dir = await tempDir();
    const first = await Outbox.open(dir, roomy, logger);
    await appendMany(first, 1, 5);
    await first.close();
    const [segment] = (await readdir(dir)).filter((f) => f.startsWith('seg-'));
    const data = await readFile(join(dir, segment!));
    data[data.indexOf('"m3"') + 2] = '9'.charCodeAt(0); // still valid JSON: only the checksum can tell
    await writeFile(join(dir, segment!), data);
    const reopened = await openOutbox(dir, { hotBytes: 0 });
    expect(reopened.corrupt).toBe(1);
    expect(payloads(reopened)).toEqual(['m1', 'm2', 'm4', 'm5']);

    // Damaged after open: found when the publisher reads it back, skipped, the rest still delivered.
    const [current] = (await readdir(dir))
      .filter((f) => f.startsWith('seg-'))
      .sort()
      .reverse();
    await appendMany(reopened, 6, 8);
    const now = await readFile(join(dir, current!));
    now[now.indexOf('"m7"') + 2] = '0'.charCodeAt(0);
    await writeFile(join(dir, current!), now);
    expect(payloads(reopened)).toEqual(['m1', 'm2', 'm4', 'm5', 'm6', 'm8']);
    expect(reopened.corrupt).toBe(2);
    expect(reopened.depth).toBe(6);
  });

  it('keeps payloads on disk, not in memory, and reads them back in order', async () => {
    const outbox = await openOutbox(await tempDir(), { hotBytes: 0, segmentBytes: 4096 });
    const ids = await appendMany(outbox, 1, 200);
    const seen: string[] = [];
    let after = 0;
    for (;;) {
      const batch = outbox.nextBatch(after, 7);
      if (batch.length === 0) break;
      for (const e of batch) seen.push(e.payload as string);
      after = batch.at(-1)!.id;
    }
    expect(seen).toEqual(ids.map((_, i) => `m${i + 1}`));
  });

  it('a failing disk: appends still resolve, the error is reported once, entries are delivered, and written once the disk is back', async () => {
    const dir = await tempDir();
    const io = faultyIo();
    const errors: (string | null)[] = [];
    let recovered!: () => void;
    const back = new Promise<void>((r) => (recovered = r));
    const outbox = await Outbox.open(
      dir,
      {
        ...roomy,
        fsyncIntervalMs: 0,
        retryMs: 10,
        io,
        onStorageError: (err) => {
          errors.push(err ? (err as NodeJS.ErrnoException).code! : null);
          if (!err) recovered();
        },
      },
      logger,
    );
    await appendMany(outbox, 1, 2);
    io.failing = 'ENOSPC';
    await appendMany(outbox, 3, 6);
    expect(errors).toEqual(['ENOSPC']);
    expect(outbox.failing).toBeTruthy();
    expect(outbox.writeErrors).toBe(4);
    expect(outbox.heldInMemory).toBe(4);
    expect(payloads(outbox)).toEqual(['m1', 'm2', 'm3', 'm4', 'm5', 'm6']); // still sent while connected
    outbox.ack(outbox.nextBatch(2, 1)[0]!.id); // m3 delivered while held: it need not be written
    io.failing = null;
    await back;
    expect(errors).toEqual(['ENOSPC', null]);
    expect(outbox.heldInMemory).toBe(0);
    await appendMany(outbox, 7, 7);
    await outbox.close();
    const reopened = await openOutbox(dir);
    expect(payloads(reopened)).toEqual(['m1', 'm2', 'm4', 'm5', 'm6', 'm7']);
    expect(reopened.corrupt).toBe(0);
  });

  it('bounds what it holds in memory while the disk fails, dropping the oldest held and counting them', async () => {
    const io = faultyIo();
    const drops: OutboxDrop[] = [];
    const outbox = await openOutbox(await tempDir(), { io, maxHeldBytes: 1000, retryMs: 60_000, onDrop: (d) => drops.push(d) });
    io.failing = 'EROFS';
    await appendMany(outbox, 1, 40);
    expect(outbox.heldInMemory).toBeLessThan(40);
    expect(outbox.heldInMemory).toBeGreaterThan(0);
    expect(drops.every((d) => d.reason === 'maxHeldBytes')).toBe(true);
    expect(outbox.dropped + outbox.heldInMemory).toBe(40);
    expect(payloads(outbox).at(-1)).toBe('m40');
  });
});

describe('SeqStore', () => {
  it('counts per source from 1 and continues across reopen', async () => {
    const dir = await tempDir();
    const seq = SeqStore.open(dir, undefined, logger);
    expect([seq.next('camera'), seq.next('camera'), seq.next('door'), seq.next('camera')]).toEqual([1, 2, 1, 3]);
    seq.close();
    const again = SeqStore.open(dir, undefined, logger);
    expect(again.next('camera')).toBe(4);
    expect(again.next('door')).toBe(2);
    again.close();
  });

  it('continues after a crash without close (each next() reaches the kernel)', async () => {
    const dir = await tempDir();
    const crashed = SeqStore.open(dir, undefined, logger);
    for (let i = 0; i < 12; i++) crashed.next('camera');
    const reopened = SeqStore.open(dir, undefined, logger);
    expect(reopened.next('camera')).toBe(13);
    reopened.close();
    crashed.close();
  });

  it('continues from the seq records the outbox wrote with the Results when seq.json is behind, torn or missing', async () => {
    const dir = await tempDir();
    const outbox = await Outbox.open(join(dir, 'outbox'), { ...roomy, segmentBytes: 300 }, logger); // never closed: a crash
    const seq = SeqStore.open(dir, outbox, logger);
    for (let i = 0; i < 40; i++) {
      const n = seq.next(i % 4 === 0 ? 'door' : 'camera');
      const id = await outbox.append({ topic: 'b/labels', payload: JSON.stringify({ seq: n }), qos: 1 });
      outbox.ack(id); // delivered: its segment goes, the seq must not
    }
    expect([seq.current('camera'), seq.current('door')]).toEqual([30, 10]);
    await writeFile(join(dir, 'seq.json'), '{"camera": 7, "door": 3}'); // as if its writes had not reached the disk
    const reopened = await openOutbox(join(dir, 'outbox'));
    const again = SeqStore.open(dir, reopened, logger);
    expect([again.next('camera'), again.next('door')]).toEqual([31, 11]);
    again.close();

    await writeFile(join(dir, 'seq.json'), '{"camera": 9'); // torn
    const recovered = SeqStore.open(dir, reopened, logger);
    expect(recovered.next('camera')).toBe(32);
    recovered.close();
    expect(SeqStore.open(dir, undefined, logger).next('camera')).toBe(33); // and the file is whole again
  });

  it('a seq reaches the disk in the same write as its Result (no seq.json write per Result)', async () => {
    const dir = await tempDir();
    const outbox = await Outbox.open(join(dir, 'outbox'), { ...roomy, fsyncIntervalMs: 0 }, logger); // never closed: a crash
    const seq = SeqStore.open(dir, outbox, logger);
    const seqFile = await readFile(join(dir, 'seq.json'), 'utf8');
    for (let i = 0; i < 5; i++) await outbox.append({ topic: 'b/labels', payload: JSON.stringify({ seq: seq.next('camera') }), qos: 1 });
    expect(await readFile(join(dir, 'seq.json'), 'utf8')).toBe(seqFile);
    const again = SeqStore.open(dir, await openOutbox(join(dir, 'outbox')), logger);
    expect(again.next('camera')).toBe(6);
    again.close();
  });

  it('reads the seq from Results in segments written before seq records existed', async () => {
    const dir = await tempDir();
    await mkdir(join(dir, 'outbox'));
    const legacy = [41, 42].map((n) =>
      JSON.stringify({ id: n, ts: Date.now(), topic: 't', qos: 1, retain: false, payload: JSON.stringify({ seq: n, source: 'camera' }) }),
    );
    await writeFile(join(dir, 'outbox', 'seg-0000000000000041.jsonl'), `${legacy.join('\n')}\n`);
    const outbox = await openOutbox(join(dir, 'outbox'));
    expect(outbox.depth).toBe(2);
    const seq = SeqStore.open(dir, outbox, logger);
    expect(seq.next('camera')).toBe(43);
    seq.close();
  });
});
