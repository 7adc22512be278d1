/**
 * Durable, ordered, bounded outbox (docs/ARCHITECTURE.md, "Durability"): a Result is appended here before it is sent and
 * leaves only when the broker acknowledged it, so it survives broker outages and daemon restarts.
 *
 * On disk: `seg-<firstId>.jsonl` segment files, one record per line (`<crc32c hex> <json>`), plus an
 * `ack` file holding the cursor (every id <= cursor is acknowledged or dropped). A record whose
 * checksum does not match (torn by a crash, flipped by the card) is skipped and counted, never sent.
 *
 * When append() resolves, the record reached the kernel with write(2) (survives `kill -9`); with
 * `fsyncIntervalMs` 0 it was also fdatasynced (survives a power cut), otherwise the segment is
 * fdatasynced at most every `fsyncIntervalMs`. Segments are created (header written and synced, then
 * renamed into place), closed (synced) and deleted with the directory fsynced after each change; the
 * cursor file is written to a temp file, synced and renamed. The cursor is persisted lazily, so a crash
 * may re-send entries that were already acknowledged (at-least-once) but never loses a synced one.
 *
 * Result seq numbers ride along: SeqStore.next() calls noteSeq(), and the next write carries a
 * `{"seq":{...}}` record ahead of the Results it numbers (the same write(2) and fdatasync), and every
 * new segment starts with the full map, so seqHighWater() after open is at least every seq that
 * reached the disk.
 *
 * Memory: an index of the pending entries (id, segment, offset, length, topic, timestamp); payloads
 * stay in memory only for the most recently written entries (`hotBytes`, so a connected publisher
 * never reads back) and while the disk refuses writes. nextBatch() stays synchronous: it reads the
 * records it needs, plus a read-ahead window of the following ones, with one pread(2) per segment.
 *
 * When a write fails (ENOSPC, EROFS, EIO), append still resolves (the daemon keeps producing) but the
 * entries are held in memory (bounded by `maxHeldBytes`, oldest dropped and counted beyond it) and
 * still delivered while connected; `onStorageError(err)` is called once, every later append is held
 * too (keeping the order on disk), and a retry every `retryMs` writes them all to a fresh segment,
 * then calls `onStorageError(null)`. Held entries not written by close() are lost with the process.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { crc32c } from './crc32c.js';

export type Qos = 0 | 1 | 2;

export interface OutboxEntryInput {
  topic: string;
  payload: string | Buffer;
  qos: Qos;
  retain?: boolean;
}

export interface OutboxEntry extends OutboxEntryInput {
  /** Increases by one per append, across restarts. */
  id: number;
  /** Epoch ms of the append (for maxAgeSec). */
  ts: number;
}

/** Why entries were dropped undelivered: the bounds, or the memory cap on entries the disk refused. */
export type DropReason = 'maxMessages' | 'maxBytes' | 'maxAge' | 'maxHeldBytes';

export interface OutboxDrop {
  reason: DropReason;
  count: number;
  firstId: number;
  lastId: number;
  /** Total dropped since open, all reasons. */
  totalDropped: number;
}

/** The two calls a failing disk breaks; replaceable for tests. */
export interface OutboxIo {
  write(fh: FileHandle, data: Buffer, offset: number, length: number): Promise<{ bytesWritten: number }>;
  datasync(fh: FileHandle): Promise<void>;
}

export interface OutboxOptions {
  /** Oldest entries are dropped (and counted) beyond these bounds. */
  maxMessages: number;
  /** Bytes of pending records as stored on disk. */
  maxBytes: number;
  /** 0 = no age bound. */
  maxAgeSec: number;
  /** Rotate the segment being written once it is this large. Default 1 MiB. */
  segmentBytes?: number;
  /** 0 = fdatasync before each append resolves (group commit); N = at most every N ms. Default 1000. */
  fsyncIntervalMs?: number;
  /** Persist the ack cursor at most this often. Default 1000 ms. */
  cursorFlushMs?: number;
  /** Payload bytes of recently written entries kept in memory for the publisher. Default 256 KiB. */
  hotBytes?: number;
  /** Payload bytes kept in memory while the disk refuses writes. Default min(maxBytes, 8 MiB). */
  maxHeldBytes?: number;
  /** While the disk refuses writes, retry this often. Default 5000 ms. */
  retryMs?: number;
  /** Called for every drop caused by the bounds, so the daemon can report it. */
  onDrop?: (drop: OutboxDrop) => void;
  /** Called with the error when writing starts failing, with null once the held entries are on disk. */
  onStorageError?: (error: Error | null) => void;
  /** For tests: the write and fdatasync calls. */
  io?: OutboxIo;
}

interface Segment {
  path: string;
  firstId: number;
  /** Highest id written to this segment (firstId - 1 while empty). */
  lastId: number;
  /** Read descriptor, opened on the first read-back. */
  fd: number | null;
}

interface Stored {
  id: number;
  ts: number;
  topic: string;
  qos: Qos;
  retain: boolean;
  /** Length of the record line on disk, newline included. */
  bytes: number;
  acked: boolean;
  /** Where the record is; null while it is held in memory only. */
  segment: Segment | null;
  offset: number;
  /** Set while hot (recently written) or held (not on disk). */
  payload?: string | Buffer;
}

interface QueuedWrite {
  stored: Stored;
  line: Buffer;
  resolve: (id: number) => void;
}

type ParsedLine =
  | { kind: 'entry'; offset: number; length: number; record: DecodedRecord; legacy: boolean }
  | { kind: 'meta'; offset: number; length: number; seq: Record<string, number> }
  | { kind: 'corrupt'; offset: number; length: number };

interface DecodedRecord {
  id: number;
  ts: number;
  topic: string;
  qos: Qos;
  retain: boolean;
  payload: string | Buffer;
}

const SEGMENT_RE = /^seg-(\d+)\.jsonl$/;
const DEFAULT_SEGMENT_BYTES = 1024 * 1024;
const DEFAULT_HOT_BYTES = 256 * 1024;
const DEFAULT_MAX_HELD_BYTES = 8 * 1024 * 1024;
const READ_AHEAD_BYTES = 64 * 1024;
const WARN_INTERVAL_MS = 60_000;
const CORRUPT_WARNINGS_PER_OPEN = 20;

const realIo: OutboxIo = {
  write: (fh, data, offset, length) => fh.write(data, offset, length),
  datasync: (fh) => fh.datasync(),
};

type ResolvedOptions = Required<Omit<OutboxOptions, 'onDrop' | 'onStorageError'>> & Pick<OutboxOptions, 'onDrop' | 'onStorageError'>;

export class Outbox {
  private readonly entries = new Map<number, Stored>();
  /** Entries whose payload is in memory because they were written recently. */
  private readonly hot = new Map<number, Stored>();
  /** Entries the disk refused, in id order. */
  private readonly held = new Map<number, Stored>();
  /** Payloads read ahead from disk for the next nextBatch calls. */
  private readonly readAhead = new Map<number, string | Buffer>();
  private readonly segments: Segment[] = [];
  private readonly writeQueue: QueuedWrite[] = [];
  private readonly seqHigh = new Map<string, number>();
  private readonly seqDirty = new Set<string>();
  private current: { fh: FileHandle; size: number; segment: Segment } | null = null;
  private writing: Promise<void> | null = null;
  private rotateBeforeNextWrite = false;
  private fsyncDirty = false;
  private cursor: number;
  /** Highest id assigned by append(). */
  private lastAssigned: number;
  /** Highest id that reached the index (written, or held). */
  private insertedThrough: number;
  private pendingCount = 0;
  private pendingBytes = 0;
  private hotBytes = 0;
  private heldBytes = 0;
  private readAheadBytes = 0;
  private droppedTotal = 0;
  private corruptTotal = 0;
  private corruptWarnings = 0;
  private writeErrorsTotal = 0;
  private storageError: { error: Error; from: 'write' | 'fsync' } | null = null;
  private retryDue = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private persistedCursor: number;
  private cursorTimer: NodeJS.Timeout | null = null;
  private cursorWrite: Promise<void> = Promise.resolve();
  private fsyncTimer: NodeJS.Timeout | null = null;
  private lastDropWarn = 0;
  private lastWriteWarn = 0;
  private dirSyncWarned = false;
  private closed = false;
  private readonly unlinks = new Set<Promise<void>>();

  private constructor(
    private readonly dir: string,
    private readonly options: ResolvedOptions,
    private readonly logger: Logger,
    cursor: number,
  ) {
    this.cursor = cursor;
    this.persistedCursor = cursor;
    this.lastAssigned = cursor;
    this.insertedThrough = cursor;
  }

  /** Opens (creating if needed) the outbox in `dir`, resuming the unacknowledged entries in order. */
  static async open(dir: string, options: OutboxOptions, logger: Logger): Promise<Outbox> {
    for (const key of ['maxMessages', 'maxBytes', 'maxAgeSec'] as const) {
      const value = options[key];
      if (!Number.isFinite(value) || value < 0 || (key !== 'maxAgeSec' && value === 0)) {
        throw new RangeError(`outbox ${key} must be a ${key === 'maxAgeSec' ? 'non-negative' : 'positive'} number, got ${value}`);
      }
    }
    const fsyncIntervalMs = options.fsyncIntervalMs ?? 1000;
    if (!Number.isFinite(fsyncIntervalMs) || fsyncIntervalMs < 0) {
      throw new RangeError(`outbox fsyncIntervalMs must be a non-negative number, got ${fsyncIntervalMs}`);
    }
    await mkdir(dir, { recursive: true });
    const cursor = await readCursor(dir, logger);
    const outbox = new Outbox(
      dir,
      {
        segmentBytes: DEFAULT_SEGMENT_BYTES,
        cursorFlushMs: 1000,
        hotBytes: DEFAULT_HOT_BYTES,
        maxHeldBytes: Math.min(options.maxBytes, DEFAULT_MAX_HELD_BYTES),
        retryMs: 5000,
        io: realIo,
        ...options,
        fsyncIntervalMs,
      },
      logger,
      cursor,
    );
    await outbox.load();
    return outbox;
  }

  /** Unacknowledged entries. */
  get depth(): number {
    return this.pendingCount;
  }
  /** Bytes of the unacknowledged records. */
  get bytes(): number {
    return this.pendingBytes;
  }
  /** Entries dropped by the bounds since open. */
  get dropped(): number {
    return this.droppedTotal;
  }
  /** Records skipped since open because their checksum or content was wrong (torn by a crash, damaged on the card). */
  get corrupt(): number {
    return this.corruptTotal;
  }
  /** Appends that could not be written to disk when they were made (held in memory, retried). */
  get writeErrors(): number {
    return this.writeErrorsTotal;
  }
  /** Entries held in memory only, waiting for the disk. */
  get heldInMemory(): number {
    return this.held.size;
  }
  /** The write or fdatasync error the outbox is currently in, or null. */
  get failing(): Error | null {
    return this.storageError?.error ?? null;
  }
  /** Every id <= this is acknowledged or dropped. */
  get ackedThrough(): number {
    return this.cursor;
  }

  /** Writes the entry to disk (and fdatasyncs it when `fsyncIntervalMs` is 0), then resolves with its id; it is then visible to nextBatch. */
  append(input: OutboxEntryInput): Promise<number> {
    if (this.closed) return Promise.reject(new Error('outbox is closed'));
    const problem = checkInput(input);
    if (problem) return Promise.reject(new TypeError(`outbox entry rejected: ${problem}`));
    const stored: Stored = {
      id: ++this.lastAssigned,
      ts: Date.now(),
      topic: input.topic,
      payload: input.payload,
      qos: input.qos,
      retain: input.retain ?? false,
      bytes: 0,
      acked: false,
      segment: null,
      offset: 0,
    };
    const line = encodeLine(encodeRecord(stored, input.payload));
    stored.bytes = line.length;
    return new Promise<number>((resolve) => {
      this.writeQueue.push({ stored, line, resolve });
      this.kickWriter();
    });
  }

  /** Up to `max` unacknowledged entries with id > afterId, oldest first. Reads from disk what is not in memory. */
  nextBatch(afterId: number, max: number): OutboxEntry[] {
    this.enforceBounds();
    const batch: OutboxEntry[] = [];
    let after = afterId;
    let skipped = false;
    while (batch.length < max) {
      const picked = this.pick(after, max - batch.length);
      if (picked.length === 0) break;
      let corrupt = false;
      for (const stored of picked) {
        const payload = stored.payload ?? this.readAhead.get(stored.id);
        if (payload === undefined) {
          this.markDone(stored); // unreadable: never delivered, counted by corrupt
          corrupt = skipped = true;
          continue;
        }
        this.forgetReadAhead(stored);
        batch.push(publicEntry(stored, payload));
      }
      after = picked[picked.length - 1]!.id;
      if (!corrupt) break;
    }
    if (skipped) this.advanceCursor();
    return batch;
  }

  /** Unacknowledged entries in order, payloads read from disk (e.g. to inspect a backlog). */
  *pending(): IterableIterator<OutboxEntry> {
    for (const stored of [...this.entries.values()]) {
      if (stored.acked) continue;
      let payload = stored.payload ?? this.readAhead.get(stored.id);
      if (payload === undefined) {
        this.readPayloads([stored]);
        payload = this.readAhead.get(stored.id);
        this.forgetReadAhead(stored);
      }
      if (payload !== undefined) yield publicEntry(stored, payload);
    }
  }

  /** Records that the seq handed out for `source` is now `seq`; the next write carries it (see SeqStore). */
  noteSeq(source: string, seq: number): void {
    if (seq <= (this.seqHigh.get(source) ?? 0)) return;
    this.seqHigh.set(source, seq);
    this.seqDirty.add(source);
  }

  /** The highest seq per source found on disk at open, and noted since. */
  seqHighWater(): ReadonlyMap<string, number> {
    return new Map(this.seqHigh);
  }

  /**
   * Marks an entry delivered. Acks may arrive out of order; the cursor advances over the
   * contiguous acknowledged prefix. Unknown or repeated ids are ignored (a dropped entry may still
   * be acknowledged by a publish that was already in flight).
   */
  ack(id: number): void {
    const stored = this.entries.get(id);
    if (!stored || stored.acked) return;
    this.markDone(stored);
    this.advanceCursor();
  }

  /** Finishes pending writes, persists the cursor and closes the files. Pending entries stay on disk. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.writing) await this.writing;
    for (const timer of [this.cursorTimer, this.retryTimer]) if (timer) clearTimeout(timer);
    if (this.fsyncTimer) clearInterval(this.fsyncTimer);
    this.cursorTimer = this.fsyncTimer = this.retryTimer = null;
    if (this.held.size > 0) await this.retryHeld();
    if (this.held.size > 0) {
      this.logger.error({ dir: this.dir, lost: this.held.size }, 'outbox: closing with entries the disk refused; they are lost');
    }
    await this.persistCursor();
    await Promise.all(this.unlinks);
    const current = this.current;
    this.current = null;
    if (current) {
      await this.options.io.datasync(current.fh).catch((err) => this.logger.warn({ err }, 'outbox: fdatasync at close failed'));
      await current.fh.close();
    }
    for (const segment of this.segments) closeReadFd(segment);
  }

  private async load(): Promise<void> {
    const files = await readdir(this.dir);
    // A segment or cursor that never got renamed into place: its content is not promised to anyone.
    await Promise.all(files.filter((f) => f.endsWith('.tmp')).map((f) => unlink(join(this.dir, f)).catch(() => undefined)));
    const names = files
      .map((name) => ({ name, match: SEGMENT_RE.exec(name) }))
      .filter((f): f is { name: string; match: RegExpExecArray } => f.match !== null)
      .sort((a, b) => Number(a.match[1]) - Number(b.match[1]));
    let highest = this.cursor;
    const obsolete: Segment[] = [];
    for (const { name, match } of names) {
      const path = join(this.dir, name);
      const firstId = Number(match[1]);
      const segment: Segment = { path, firstId, lastId: firstId - 1, fd: null };
      highest = Math.max(highest, firstId - 1); // ids never go back, even when the records before were deleted
      let pendingHere = 0;
      for (const parsed of parseSegment(await readFile(path))) {
        if (parsed.kind === 'corrupt') {
          this.reportCorrupt(path, parsed.offset, parsed.length);
          continue;
        }
        if (parsed.kind === 'meta') {
          for (const [source, seq] of Object.entries(parsed.seq)) this.noteSeq(source, seq);
          continue;
        }
        const { record } = parsed;
        if (parsed.legacy) {
          // Written before records carried checksums and seq records: the seq is in the Result itself.
          const found = resultSeq(record.payload);
          if (found) this.noteSeq(found.source, found.seq);
        }
        if (record.id <= highest && record.id > this.cursor) {
          // Written again after a failed write (same entry): keep the first copy. Otherwise out of order.
          if (!this.entries.has(record.id)) this.reportCorrupt(path, parsed.offset, parsed.length);
          continue;
        }
        segment.lastId = Math.max(segment.lastId, record.id);
        highest = Math.max(highest, record.id);
        if (record.id <= this.cursor) continue;
        this.entries.set(record.id, {
          id: record.id,
          ts: record.ts,
          topic: record.topic,
          qos: record.qos,
          retain: record.retain,
          bytes: parsed.length,
          acked: false,
          segment,
          offset: parsed.offset,
        });
        this.pendingCount++;
        this.pendingBytes += parsed.length;
        pendingHere++;
      }
      if (pendingHere === 0) obsolete.push(segment);
      else this.segments.push(segment);
    }
    this.seqDirty.clear(); // the new segment's header carries them all
    if (this.corruptTotal > 0) {
      this.logger.warn({ dir: this.dir, corrupt: this.corruptTotal }, 'outbox: skipped unreadable records (torn by a crash or damaged)');
    }
    this.lastAssigned = this.insertedThrough = highest;
    // The new segment (with the seq header) is on disk before the segments it replaces are deleted.
    const fresh = await this.openSegment(highest + 1);
    const stale = obsolete.filter((s) => s.path !== fresh.path);
    if (stale.length > 0) {
      await Promise.all(stale.map((s) => unlink(s.path).catch(() => undefined)));
      await this.syncDir();
    }
    if (this.options.fsyncIntervalMs > 0) {
      this.fsyncTimer = setInterval(() => void this.fsyncNow(), this.options.fsyncIntervalMs);
      this.fsyncTimer.unref();
    }
    this.enforceBounds();
    if (this.pendingCount > 0) {
      this.logger.info({ dir: this.dir, depth: this.pendingCount, bytes: this.pendingBytes }, 'outbox: resuming unacknowledged entries');
    }
  }

  /** Creates `seg-<firstId>.jsonl` whole: header with every seq written and synced under a temp name, renamed, directory synced. */
  private async openSegment(firstId: number): Promise<Segment> {
    const path = join(this.dir, `seg-${String(firstId).padStart(16, '0')}.jsonl`);
    const tmp = `${path}.tmp`;
    const header = encodeLine(JSON.stringify({ seq: Object.fromEntries(this.seqHigh) }));
    const fh = await open(tmp, 'w');
    try {
      await writeAll(this.options.io, fh, header);
      await this.options.io.datasync(fh);
      await rename(tmp, path);
    } catch (err) {
      await fh.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
    await this.syncDir();
    this.seqDirty.clear();
    const last = this.segments[this.segments.length - 1];
    if (last?.path === path) {
      // A segment that got nothing but its header before a failed write: the rename replaced it.
      closeReadFd(last);
      this.segments.pop();
    }
    const segment: Segment = { path, firstId, lastId: firstId - 1, fd: null };
    this.segments.push(segment);
    this.current = { fh, size: header.length, segment };
    return segment;
  }

  private kickWriter(): void {
    if (this.writing) return;
    this.writing = this.writeLoop().finally(() => {
      this.writing = null;
      if (this.writeQueue.length > 0 || this.retryDue) this.kickWriter();
    });
  }

  /** Group commit: everything appended while a write is in progress goes out in the next single write (and fdatasync). */
  private async writeLoop(): Promise<void> {
    while (this.writeQueue.length > 0 || this.retryDue) {
      if (this.retryDue) {
        this.retryDue = false;
        await this.retryHeld();
      }
      if (this.writeQueue.length === 0) continue;
      const batch = this.writeQueue.splice(0);
      const failedBefore = this.held.size > 0 || this.storageError?.from === 'write';
      if (!failedBefore) {
        try {
          await this.writeRecords(batch);
          if (this.options.fsyncIntervalMs === 0) this.clearStorageError(); // written and synced: an fdatasync error is over
        } catch (err) {
          this.writeFailed(err as Error);
        }
      }
      for (const { stored } of batch) {
        this.entries.set(stored.id, stored);
        this.insertedThrough = stored.id;
        this.pendingCount++;
        this.pendingBytes += stored.bytes;
        if (stored.segment) this.makeHot(stored);
        else {
          this.writeErrorsTotal++;
          this.held.set(stored.id, stored);
          this.heldBytes += stored.bytes;
        }
      }
      this.enforceBounds();
      for (const { stored, resolve } of batch) resolve(stored.id);
    }
  }

  /** Writes the records (after the seq record, if a seq changed) in one write(2); fdatasync when fsyncIntervalMs is 0. */
  private async writeRecords(batch: { stored: Stored; line: Buffer }[]): Promise<void> {
    if (!this.current || this.rotateBeforeNextWrite || this.current.size >= this.options.segmentBytes) {
      await this.rotate(batch[0]!.stored.id);
    }
    const current = this.current!;
    const meta = this.takeSeqMeta();
    const parts: Buffer[] = [];
    let size = current.size;
    if (meta) {
      const line = encodeLine(JSON.stringify({ seq: meta }));
      parts.push(line);
      size += line.length;
    }
    const offsets: number[] = [];
    for (const { line } of batch) {
      offsets.push(size);
      parts.push(line);
      size += line.length;
    }
    try {
      await writeAll(this.options.io, current.fh, parts.length === 1 ? parts[0]! : Buffer.concat(parts));
      if (this.options.fsyncIntervalMs === 0) await this.options.io.datasync(current.fh);
    } catch (err) {
      if (meta) for (const source of Object.keys(meta)) this.seqDirty.add(source);
      // Cut a partial record off (best effort: a torn one is skipped at open anyway); write the next to a fresh segment.
      await current.fh.truncate(current.size).catch(() => undefined);
      this.rotateBeforeNextWrite = true;
      throw err;
    }
    current.size = size;
    batch.forEach(({ stored }, i) => {
      stored.segment = current.segment;
      stored.offset = offsets[i]!;
    });
    current.segment.lastId = Math.max(current.segment.lastId, batch[batch.length - 1]!.stored.id);
    if (this.options.fsyncIntervalMs > 0) this.fsyncDirty = true;
  }

  private writeFailed(err: Error): void {
    const first = this.storageError === null;
    this.storageError = { error: err, from: 'write' };
    const now = Date.now();
    if (first || now - this.lastWriteWarn >= WARN_INTERVAL_MS) {
      this.lastWriteWarn = now;
      this.logger.error(
        { err, dir: this.dir, held: this.held.size, writeErrors: this.writeErrorsTotal },
        'outbox: cannot write to the disk; Results are held in memory and retried',
      );
    }
    if (first) this.notifyStorage(err);
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.retryTimer || this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.retryDue = true;
      this.kickWriter();
    }, this.options.retryMs);
    this.retryTimer.unref();
  }

  /** Writes every held entry, in order, to a fresh segment; clears the storage error when they are all on disk. */
  private async retryHeld(): Promise<void> {
    const held = [...this.held.values()].filter((s) => !s.acked);
    try {
      if (held.length > 0) {
        await this.writeRecords(held.map((stored) => ({ stored, line: encodeLine(encodeRecord(stored, stored.payload!)) })));
      } else if (this.rotateBeforeNextWrite || !this.current) {
        // Nothing left to write (delivered or dropped meanwhile): creating the next segment proves the disk is back.
        await this.rotate(this.insertedThrough + 1);
      }
    } catch (err) {
      this.writeFailed(err as Error);
      return;
    }
    for (const stored of held) {
      if (this.held.delete(stored.id)) this.heldBytes -= stored.bytes;
      this.makeHot(stored);
    }
    if (this.held.size === 0) {
      this.logger.info({ dir: this.dir, written: held.length }, 'outbox: the disk takes writes again; held entries written');
      this.clearStorageError();
    } else this.scheduleRetry();
  }

  private clearStorageError(): void {
    if (!this.storageError) return;
    this.storageError = null;
    this.notifyStorage(null);
  }

  private notifyStorage(err: Error | null): void {
    try {
      this.options.onStorageError?.(err);
    } catch (callbackErr) {
      this.logger.error({ err: callbackErr }, 'outbox: onStorageError callback threw');
    }
  }

  private takeSeqMeta(): Record<string, number> | null {
    if (this.seqDirty.size === 0) return null;
    const meta: Record<string, number> = {};
    for (const source of this.seqDirty) meta[source] = this.seqHigh.get(source)!;
    this.seqDirty.clear();
    return meta;
  }

  private makeHot(stored: Stored): void {
    if (stored.payload === undefined || stored.acked) {
      stored.payload = undefined;
      return;
    }
    this.hot.set(stored.id, stored);
    this.hotBytes += stored.bytes;
    for (const [id, old] of this.hot) {
      if (this.hotBytes <= this.options.hotBytes) break;
      this.hot.delete(id);
      this.hotBytes -= old.bytes;
      old.payload = undefined;
    }
  }

  private async rotate(firstId: number): Promise<void> {
    const previous = this.current;
    this.current = null;
    if (previous) {
      // Closed synced: whatever fsyncIntervalMs says, a finished segment is on the card.
      await this.options.io.datasync(previous.fh).catch((err) => this.logger.warn({ err }, 'outbox: fdatasync at rotation failed'));
      await previous.fh.close().catch(() => undefined);
    }
    await this.openSegment(firstId);
    this.rotateBeforeNextWrite = false;
    this.deleteAckedSegments();
  }

  /** The next `max` unacknowledged entries after `afterId`, their payloads in memory or read ahead. */
  private pick(afterId: number, max: number): Stored[] {
    if (this.readAheadBytes > 4 * READ_AHEAD_BYTES) {
      // Read ahead and never handed out (the publisher went back after a reconnect): start over.
      this.readAhead.clear();
      this.readAheadBytes = 0;
    }
    const picked: Stored[] = [];
    const toRead: Stored[] = [];
    const it = this.entries.values();
    let r = it.next();
    for (; !r.done && picked.length < max; r = it.next()) {
      const stored = r.value;
      if (stored.id <= afterId || stored.acked) continue;
      picked.push(stored);
      if (stored.payload === undefined && !this.readAhead.has(stored.id)) toRead.push(stored);
    }
    if (toRead.length === 0) return picked;
    // Read ahead the following records of the same segment, so the next calls need no read.
    const segment = toRead[toRead.length - 1]!.segment;
    const start = toRead.find((s) => s.segment === segment)!.offset;
    for (; !r.done; r = it.next()) {
      const stored = r.value;
      if (stored.acked || stored.payload !== undefined || this.readAhead.has(stored.id)) continue;
      if (stored.segment !== segment || stored.offset + stored.bytes - start > READ_AHEAD_BYTES) break;
      toRead.push(stored);
    }
    this.readPayloads(toRead);
    return picked;
  }

  /** Reads the records of `list` (one pread per segment), verifies them and fills readAhead; reports the bad ones. */
  private readPayloads(list: Stored[]): void {
    const bySegment = new Map<Segment, Stored[]>();
    for (const stored of list) {
      if (!stored.segment) continue;
      const group = bySegment.get(stored.segment);
      if (group) group.push(stored);
      else bySegment.set(stored.segment, [stored]);
    }
    for (const [segment, group] of bySegment) {
      const start = Math.min(...group.map((s) => s.offset));
      const end = Math.max(...group.map((s) => s.offset + s.bytes));
      const buf = Buffer.allocUnsafe(end - start);
      let got = 0;
      try {
        segment.fd ??= openSync(segment.path, 'r');
        while (got < buf.length) {
          const n = readSync(segment.fd, buf, got, buf.length - got, start + got);
          if (n === 0) break;
          got += n;
        }
      } catch (err) {
        this.logger.warn({ err, path: segment.path }, 'outbox: cannot read a segment');
      }
      for (const stored of group) {
        const at = stored.offset - start;
        let payload: string | Buffer | undefined;
        if (at + stored.bytes <= got && buf[at + stored.bytes - 1] === 0x0a) {
          const parsed = parseLine(buf.subarray(at, at + stored.bytes - 1), stored.offset);
          if (parsed.kind === 'entry' && parsed.record.id === stored.id) payload = parsed.record.payload;
        }
        if (payload === undefined) {
          this.reportCorrupt(segment.path, stored.offset, stored.bytes);
          continue;
        }
        this.readAhead.set(stored.id, payload);
        this.readAheadBytes += stored.bytes;
      }
    }
  }

  private forgetReadAhead(stored: Stored): void {
    if (this.readAhead.delete(stored.id)) this.readAheadBytes -= stored.bytes;
  }

  private reportCorrupt(path: string, offset: number, length: number): void {
    this.corruptTotal++;
    if (this.corruptWarnings++ < CORRUPT_WARNINGS_PER_OPEN) {
      this.logger.warn({ path, offset, length, corrupt: this.corruptTotal }, 'outbox: skipped a corrupt record (checksum or content)');
    }
  }

  private enforceBounds(): void {
    const { maxMessages, maxBytes, maxAgeSec, maxHeldBytes } = this.options;
    const oldestAllowed = maxAgeSec > 0 ? Date.now() - maxAgeSec * 1000 : -Infinity;
    let drop: OutboxDrop | null = null;
    const flush = () => {
      if (!drop) return;
      drop.totalDropped = this.droppedTotal;
      this.reportDrop(drop);
      drop = null;
    };
    const count = (stored: Stored, reason: DropReason) => {
      if (drop && drop.reason !== reason) flush();
      this.markDone(stored);
      this.droppedTotal++;
      if (drop) {
        drop.count++;
        drop.lastId = stored.id;
      } else {
        drop = { reason, count: 1, firstId: stored.id, lastId: stored.id, totalDropped: 0 };
      }
    };
    for (const stored of this.entries.values()) {
      if (stored.acked) continue;
      let reason: DropReason | null = null;
      if (this.pendingCount > maxMessages) reason = 'maxMessages';
      else if (this.pendingBytes > maxBytes) reason = 'maxBytes';
      else if (stored.ts < oldestAllowed) reason = 'maxAge';
      if (!reason) break;
      count(stored, reason);
    }
    for (const stored of this.held.values()) {
      if (this.heldBytes <= maxHeldBytes) break;
      count(stored, 'maxHeldBytes');
    }
    flush();
    this.advanceCursor();
  }

  private reportDrop(drop: OutboxDrop): void {
    const now = Date.now();
    if (now - this.lastDropWarn >= WARN_INTERVAL_MS) {
      this.lastDropWarn = now;
      this.logger.warn({ ...drop, dir: this.dir }, 'outbox full: dropped the oldest entries');
    }
    try {
      this.options.onDrop?.(drop);
    } catch (err) {
      this.logger.error({ err }, 'outbox: onDrop callback threw');
    }
  }

  private markDone(stored: Stored): void {
    stored.acked = true;
    this.pendingCount--;
    this.pendingBytes -= stored.bytes;
    if (this.hot.delete(stored.id)) this.hotBytes -= stored.bytes;
    if (this.held.delete(stored.id)) this.heldBytes -= stored.bytes;
    stored.payload = undefined;
    this.forgetReadAhead(stored);
  }

  private advanceCursor(): void {
    const before = this.cursor;
    let allDone = true;
    for (const [id, stored] of this.entries) {
      if (!stored.acked) {
        allDone = false;
        break;
      }
      this.entries.delete(id);
      this.cursor = id;
    }
    if (allDone) this.cursor = Math.max(this.cursor, this.insertedThrough);
    if (this.cursor === before) return;
    this.deleteAckedSegments();
    if (!this.cursorTimer && !this.closed) {
      this.cursorTimer = setTimeout(() => {
        this.cursorTimer = null;
        void this.persistCursor();
      }, this.options.cursorFlushMs);
      this.cursorTimer.unref();
    }
  }

  /** Deletes finished segments, never the one being written, then syncs the directory. */
  private deleteAckedSegments(): void {
    const doomed: string[] = [];
    while (this.segments.length > 1 && this.segments[0] !== this.current?.segment && this.segments[0]!.lastId <= this.cursor) {
      const segment = this.segments.shift()!;
      closeReadFd(segment);
      doomed.push(segment.path);
    }
    if (doomed.length === 0) return;
    const done: Promise<void> = Promise.all(
      doomed.map((path) =>
        unlink(path).catch((err) => this.logger.warn({ err, path }, 'outbox: could not delete an acknowledged segment')),
      ),
    )
      .then(() => this.syncDir())
      .finally(() => this.unlinks.delete(done));
    this.unlinks.add(done);
  }

  private persistCursor(): Promise<void> {
    // Chained so two writes never race on the temp file; synced, then renamed, then the directory synced.
    this.cursorWrite = this.cursorWrite.then(async () => {
      const cursor = this.cursor;
      if (cursor === this.persistedCursor) return;
      const tmp = join(this.dir, 'ack.tmp');
      try {
        const fh = await open(tmp, 'w');
        try {
          await fh.writeFile(`${cursor}\n`);
          await fh.datasync();
        } finally {
          await fh.close();
        }
        await rename(tmp, join(this.dir, 'ack'));
        await this.syncDir();
        this.persistedCursor = cursor;
      } catch (err) {
        this.logger.warn({ err, dir: this.dir }, 'outbox: could not persist the ack cursor (entries may be re-sent after a restart)');
      }
    });
    return this.cursorWrite;
  }

  private async syncDir(): Promise<void> {
    try {
      const fh = await open(this.dir, 'r');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    } catch (err) {
      // Some filesystems refuse fsync on a directory (EINVAL); nothing more can be done there.
      if (!this.dirSyncWarned) this.logger.warn({ err, dir: this.dir }, 'outbox: cannot fsync the directory');
      this.dirSyncWarned = true;
    }
  }

  private async fsyncNow(): Promise<void> {
    const current = this.current;
    if (!this.fsyncDirty || !current) return;
    this.fsyncDirty = false;
    try {
      await this.options.io.datasync(current.fh);
      if (this.storageError?.from === 'fsync') this.clearStorageError();
    } catch (err) {
      if (current !== this.current) return; // rotated meanwhile: the rotation synced and closed it
      this.fsyncDirty = true;
      const first = this.storageError === null;
      this.storageError ??= { error: err as Error, from: 'fsync' };
      this.logger.error(
        { err, dir: this.dir },
        'outbox: fdatasync failed; Results written since the last sync may not survive a power cut',
      );
      if (first) this.notifyStorage(err as Error);
    }
  }
}

async function writeAll(io: OutboxIo, fh: FileHandle, data: Buffer): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    const { bytesWritten } = await io.write(fh, data, offset, data.length - offset);
    offset += bytesWritten;
  }
}

function closeReadFd(segment: Segment): void {
  if (segment.fd === null) return;
  try {
    closeSync(segment.fd);
  } catch {
    // already gone
  }
  segment.fd = null;
}

async function readCursor(dir: string, logger: Logger): Promise<number> {
  let text: string;
  try {
    text = await readFile(join(dir, 'ack'), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
  const cursor = Number(text.trim());
  if (text.trim() === '' || !Number.isSafeInteger(cursor) || cursor < 0) {
    // Starting from 0 re-sends what is still on disk: duplicates, never loss.
    logger.warn({ dir, content: text.slice(0, 40) }, 'outbox: unreadable ack cursor, re-sending every stored entry');
    return 0;
  }
  return cursor;
}

interface DiskRecord {
  id: number;
  ts: number;
  topic: string;
  qos: Qos;
  retain: boolean;
  payload?: string;
  payload64?: string;
}

function encodeRecord(e: Stored, payload: string | Buffer): string {
  const record: DiskRecord = { id: e.id, ts: e.ts, topic: e.topic, qos: e.qos, retain: e.retain };
  if (typeof payload === 'string') record.payload = payload;
  else record.payload64 = payload.toString('base64');
  return JSON.stringify(record);
}

/** `<crc32c of the json, 8 hex digits> <json>\n` */
function encodeLine(json: string): Buffer {
  const body = Buffer.byteLength(json);
  const line = Buffer.allocUnsafe(9 + body + 1);
  line.write(json, 9, 'utf8');
  line.write(
    crc32c(line, 9, 9 + body)
      .toString(16)
      .padStart(8, '0'),
    0,
    'latin1',
  );
  line[8] = 0x20;
  line[9 + body] = 0x0a;
  return line;
}

/** One ParsedLine per line, with its offset in the segment. */
function* parseSegment(data: Buffer): Generator<ParsedLine> {
  let start = 0;
  while (start < data.length) {
    let end = data.indexOf(0x0a, start);
    // Torn tail: a record missing only its newline is whole (its checksum says so), but it is
    // not counted as a line of `end - start + 1` bytes it does not have on disk.
    const torn = end === -1;
    if (torn) end = data.length;
    const offset = start;
    start = end + 1;
    if (end === offset) continue;
    const parsed = parseLine(data.subarray(offset, end), offset);
    if (torn && parsed.kind === 'entry') {
      // Its bytes must be re-readable as a full line: treat a record without its newline as torn.
      yield { kind: 'corrupt', offset, length: end - offset };
      continue;
    }
    yield parsed;
  }
}

const HEX = /^[0-9a-f]{8}$/;

function parseLine(line: Buffer, offset: number): ParsedLine {
  const length = line.length + 1;
  const corrupt: ParsedLine = { kind: 'corrupt', offset, length };
  let legacy = false;
  let json: string;
  if (line.length > 9 && line[8] === 0x20 && HEX.test(line.toString('latin1', 0, 8))) {
    if (crc32c(line, 9) !== Number.parseInt(line.toString('latin1', 0, 8), 16)) return corrupt;
    json = line.toString('utf8', 9);
  } else if (line[0] === 0x7b) {
    legacy = true; // a record from before checksums: only JSON validity says it is whole
    json = line.toString('utf8');
  } else return corrupt;
  let r: Partial<DiskRecord> & { seq?: unknown };
  try {
    r = JSON.parse(json) as Partial<DiskRecord> & { seq?: unknown };
  } catch {
    return corrupt;
  }
  if (typeof r !== 'object' || r === null) return corrupt;
  if (r.id === undefined && !legacy && typeof r.seq === 'object' && r.seq !== null) {
    const seq: Record<string, number> = {};
    for (const [source, value] of Object.entries(r.seq)) if (Number.isSafeInteger(value) && (value as number) > 0) seq[source] = value;
    return { kind: 'meta', offset, length, seq };
  }
  if (!Number.isSafeInteger(r.id) || (r.id as number) <= 0 || typeof r.ts !== 'number' || typeof r.topic !== 'string') return corrupt;
  if (r.qos !== 0 && r.qos !== 1 && r.qos !== 2) return corrupt;
  let payload: string | Buffer;
  if (typeof r.payload === 'string') payload = r.payload;
  else if (typeof r.payload64 === 'string') payload = Buffer.from(r.payload64, 'base64');
  else return corrupt;
  return {
    kind: 'entry',
    offset,
    length,
    legacy,
    record: { id: r.id as number, ts: r.ts, topic: r.topic, qos: r.qos, retain: r.retain === true, payload },
  };
}

/** `{source, seq}` of a Result payload, or null for anything else. */
export function resultSeq(payload: string | Buffer): { source: string; seq: number } | null {
  try {
    const parsed: unknown = JSON.parse(typeof payload === 'string' ? payload : payload.toString('utf8'));
    if (typeof parsed !== 'object' || parsed === null) return null;
    const { source, seq } = parsed as { source?: unknown; seq?: unknown };
    return typeof source === 'string' && Number.isSafeInteger(seq) ? { source, seq: seq as number } : null;
  } catch {
    return null;
  }
}

function checkInput(input: OutboxEntryInput): string | null {
  if (typeof input !== 'object' || input === null) return 'entry must be an object';
  if (typeof input.topic !== 'string' || input.topic.length === 0) return 'topic must be a non-empty string';
  if (input.topic.includes('+') || input.topic.includes('#')) return `topic "${input.topic}" must not contain wildcards`;
  if (typeof input.payload !== 'string' && !Buffer.isBuffer(input.payload)) return 'payload must be a string or a Buffer';
  if (input.qos !== 0 && input.qos !== 1 && input.qos !== 2) return `qos must be 0, 1 or 2, got ${String(input.qos)}`;
  return null;
}

function publicEntry(s: Stored, payload: string | Buffer): OutboxEntry {
  return { id: s.id, ts: s.ts, topic: s.topic, payload, qos: s.qos, retain: s.retain };
}
