/**
 * Durable, ordered, bounded outbox (docs/ARCHITECTURE.md, "Durability"): a Result is appended here before it is sent and
 * leaves only when the broker acknowledged it, so it survives broker outages and daemon restarts.
 *
 * On disk: `seg-<firstId>.jsonl` segment files of JSON lines (one record per entry) plus an `ack`
 * file holding the cursor (every id <= cursor is acknowledged or dropped). Each append reaches the
 * kernel with write(2) before append() resolves, which survives `kill -9`; only a power cut needs
 * fsync (`fsyncIntervalMs`). The cursor is persisted lazily, so a crash may re-send entries that
 * were already acknowledged (at-least-once) but never loses an unacknowledged one.
 *
 * Pending entries are mirrored in memory (bounded by maxMessages/maxBytes), which keeps nextBatch
 * synchronous and cheap; segments are read only at open.
 */
import { mkdir, open, readdir, readFile, rename, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';

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

export type DropReason = 'maxMessages' | 'maxBytes' | 'maxAge';

export interface OutboxDrop {
  reason: DropReason;
  count: number;
  firstId: number;
  lastId: number;
  /** Total dropped since open, all reasons. */
  totalDropped: number;
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
  /** fdatasync the segment being written this often; 0 (default) = rely on the page cache. */
  fsyncIntervalMs?: number;
  /** Persist the ack cursor at most this often. Default 1000 ms. */
  cursorFlushMs?: number;
  /** Called for every drop caused by the bounds, so the daemon can report it. */
  onDrop?: (drop: OutboxDrop) => void;
}

interface Stored extends OutboxEntry {
  bytes: number;
  acked: boolean;
}

interface Segment {
  path: string;
  /** Highest id written to this segment (firstId - 1 while empty). */
  lastId: number;
}

interface QueuedWrite {
  stored: Stored;
  line: Buffer;
  resolve: (id: number) => void;
}

const SEGMENT_RE = /^seg-(\d+)\.jsonl$/;
const DEFAULT_SEGMENT_BYTES = 1024 * 1024;
const WARN_INTERVAL_MS = 60_000;

export class Outbox {
  private readonly entries = new Map<number, Stored>();
  private readonly segments: Segment[] = [];
  private readonly writeQueue: QueuedWrite[] = [];
  private current: { fh: FileHandle; size: number; segment: Segment } | null = null;
  private writing: Promise<void> | null = null;
  private rotateBeforeNextWrite = false;
  private fsyncDirty = false;
  private cursor: number;
  /** Highest id assigned by append(). */
  private lastAssigned: number;
  /** Highest id that reached the in-memory mirror (written, or failed to write). */
  private insertedThrough: number;
  private pendingCount = 0;
  private pendingBytes = 0;
  private droppedTotal = 0;
  private corruptTotal = 0;
  private writeErrorsTotal = 0;
  private persistedCursor: number;
  private cursorTimer: NodeJS.Timeout | null = null;
  private cursorWrite: Promise<void> = Promise.resolve();
  private fsyncTimer: NodeJS.Timeout | null = null;
  private lastDropWarn = 0;
  private lastWriteWarn = 0;
  private closed = false;
  private readonly unlinks = new Set<Promise<void>>();

  private constructor(
    private readonly dir: string,
    private readonly options: Required<Omit<OutboxOptions, 'onDrop'>> & Pick<OutboxOptions, 'onDrop'>,
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
    await mkdir(dir, { recursive: true });
    const cursor = await readCursor(dir, logger);
    const outbox = new Outbox(
      dir,
      {
        segmentBytes: DEFAULT_SEGMENT_BYTES,
        fsyncIntervalMs: 0,
        cursorFlushMs: 1000,
        ...options,
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
  /** Unreadable records skipped at open (e.g. a record torn by a crash). */
  get corrupt(): number {
    return this.corruptTotal;
  }
  /** Appends that could not be written to disk (kept in memory only). */
  get writeErrors(): number {
    return this.writeErrorsTotal;
  }
  /** Every id <= this is acknowledged or dropped. */
  get ackedThrough(): number {
    return this.cursor;
  }

  /** Writes the entry to disk (write(2)) and resolves with its id; it is then visible to nextBatch. */
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
    };
    const line = Buffer.from(`${encodeRecord(stored)}\n`, 'utf8');
    stored.bytes = line.length;
    return new Promise<number>((resolve) => {
      this.writeQueue.push({ stored, line, resolve });
      this.kickWriter();
    });
  }

  /** Up to `max` unacknowledged entries with id > afterId, oldest first. */
  nextBatch(afterId: number, max: number): OutboxEntry[] {
    this.enforceBounds();
    const batch: OutboxEntry[] = [];
    if (max <= 0) return batch;
    for (const stored of this.entries.values()) {
      if (stored.id <= afterId || stored.acked) continue;
      batch.push(publicEntry(stored));
      if (batch.length >= max) break;
    }
    return batch;
  }

  /** Unacknowledged entries in order (e.g. to recover Result seq numbers at startup). */
  *pending(): IterableIterator<OutboxEntry> {
    for (const stored of this.entries.values()) if (!stored.acked) yield publicEntry(stored);
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
    if (this.cursorTimer) clearTimeout(this.cursorTimer);
    if (this.fsyncTimer) clearInterval(this.fsyncTimer);
    this.cursorTimer = this.fsyncTimer = null;
    await this.persistCursor();
    await Promise.all(this.unlinks);
    const current = this.current;
    this.current = null;
    if (current) {
      if (this.options.fsyncIntervalMs > 0) await current.fh.datasync().catch(() => undefined);
      await current.fh.close();
    }
  }

  private async load(): Promise<void> {
    const names = (await readdir(this.dir))
      .map((name) => ({ name, match: SEGMENT_RE.exec(name) }))
      .filter((f): f is { name: string; match: RegExpExecArray } => f.match !== null)
      .sort((a, b) => Number(a.match[1]) - Number(b.match[1]));
    let highest = this.cursor;
    for (const { name, match } of names) {
      const path = join(this.dir, name);
      const segment: Segment = { path, lastId: Number(match[1]) - 1 };
      let pendingHere = 0;
      for (const parsed of parseSegment(await readFile(path))) {
        if (parsed === null || (parsed.id <= highest && parsed.id > this.cursor)) {
          // Unreadable (torn by a crash) or out of order: skip it rather than fail to start.
          this.corruptTotal++;
          continue;
        }
        segment.lastId = Math.max(segment.lastId, parsed.id);
        highest = Math.max(highest, parsed.id);
        if (parsed.id <= this.cursor) continue;
        this.entries.set(parsed.id, parsed);
        this.pendingCount++;
        this.pendingBytes += parsed.bytes;
        pendingHere++;
      }
      if (pendingHere === 0) await unlink(path).catch(() => undefined);
      else this.segments.push(segment);
    }
    if (this.corruptTotal > 0) {
      this.logger.warn({ dir: this.dir, corrupt: this.corruptTotal }, 'outbox: skipped unreadable records (torn by a crash?)');
    }
    this.lastAssigned = this.insertedThrough = highest;
    await this.openSegment(highest + 1);
    if (this.options.fsyncIntervalMs > 0) {
      this.fsyncTimer = setInterval(() => void this.fsyncNow(), this.options.fsyncIntervalMs);
      this.fsyncTimer.unref();
    }
    this.enforceBounds();
    if (this.pendingCount > 0) {
      this.logger.info({ dir: this.dir, depth: this.pendingCount, bytes: this.pendingBytes }, 'outbox: resuming unacknowledged entries');
    }
  }

  private async openSegment(firstId: number): Promise<void> {
    const path = join(this.dir, `seg-${String(firstId).padStart(16, '0')}.jsonl`);
    const fh = await open(path, 'a');
    const segment: Segment = { path, lastId: firstId - 1 };
    this.segments.push(segment);
    this.current = { fh, size: 0, segment };
  }

  private kickWriter(): void {
    if (this.writing) return;
    this.writing = this.writeLoop().finally(() => {
      this.writing = null;
      if (this.writeQueue.length > 0) this.kickWriter();
    });
  }

  /** Group commit: everything appended while a write is in progress goes out in the next single write. */
  private async writeLoop(): Promise<void> {
    while (this.writeQueue.length > 0) {
      const batch = this.writeQueue.splice(0);
      try {
        if (!this.current || this.rotateBeforeNextWrite || this.current.size >= this.options.segmentBytes) {
          await this.rotate(batch[0]!.stored.id);
        }
        const current = this.current!;
        const data = Buffer.concat(batch.map((w) => w.line));
        let offset = 0;
        while (offset < data.length) {
          const { bytesWritten } = await current.fh.write(data, offset, data.length - offset);
          offset += bytesWritten;
        }
        current.size += data.length;
        current.segment.lastId = batch[batch.length - 1]!.stored.id;
        this.fsyncDirty = true;
      } catch (err) {
        // Disk full or failing: keep the entries in memory so they are still delivered while the
        // process lives, write the next records to a fresh segment (a torn tail is skipped at open).
        this.writeErrorsTotal += batch.length;
        this.rotateBeforeNextWrite = true;
        const now = Date.now();
        if (now - this.lastWriteWarn >= WARN_INTERVAL_MS) {
          this.lastWriteWarn = now;
          this.logger.error(
            { err, dir: this.dir, writeErrors: this.writeErrorsTotal },
            'outbox: write failed, entries kept in memory only',
          );
        }
      }
      for (const { stored } of batch) {
        this.entries.set(stored.id, stored);
        this.insertedThrough = stored.id;
        this.pendingCount++;
        this.pendingBytes += stored.bytes;
      }
      this.enforceBounds();
      for (const { stored, resolve } of batch) resolve(stored.id);
    }
  }

  private async rotate(firstId: number): Promise<void> {
    const previous = this.current;
    this.current = null;
    if (previous) await previous.fh.close().catch(() => undefined);
    this.rotateBeforeNextWrite = false;
    await this.openSegment(firstId);
    this.deleteAckedSegments();
  }

  private enforceBounds(): void {
    const { maxMessages, maxBytes, maxAgeSec } = this.options;
    const oldestAllowed = maxAgeSec > 0 ? Date.now() - maxAgeSec * 1000 : -Infinity;
    let drop: OutboxDrop | null = null;
    const flush = () => {
      if (!drop) return;
      drop.totalDropped = this.droppedTotal;
      this.reportDrop(drop);
      drop = null;
    };
    for (const stored of this.entries.values()) {
      if (stored.acked) continue;
      let reason: DropReason | null = null;
      if (this.pendingCount > maxMessages) reason = 'maxMessages';
      else if (this.pendingBytes > maxBytes) reason = 'maxBytes';
      else if (stored.ts < oldestAllowed) reason = 'maxAge';
      if (!reason) break;
      if (drop && (drop as OutboxDrop).reason !== reason) flush();
      this.markDone(stored);
      this.droppedTotal++;
      if (drop) {
        (drop as OutboxDrop).count++;
        (drop as OutboxDrop).lastId = stored.id;
      } else {
        drop = { reason, count: 1, firstId: stored.id, lastId: stored.id, totalDropped: 0 };
      }
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

  /** Deletes finished segments, never the one being written. */
  private deleteAckedSegments(): void {
    while (this.segments.length > 1 && this.segments[0] !== this.current?.segment && this.segments[0]!.lastId <= this.cursor) {
      const { path } = this.segments.shift()!;
      const done: Promise<void> = unlink(path)
        .catch((err) => this.logger.warn({ err, path }, 'outbox: could not delete an acknowledged segment'))
        .finally(() => this.unlinks.delete(done));
      this.unlinks.add(done);
    }
  }

  private persistCursor(): Promise<void> {
    // Chained so two writes never race on the temp file; rename makes the update atomic.
    this.cursorWrite = this.cursorWrite.then(async () => {
      const cursor = this.cursor;
      if (cursor === this.persistedCursor) return;
      const tmp = join(this.dir, 'ack.tmp');
      try {
        await writeFile(tmp, `${cursor}\n`);
        await rename(tmp, join(this.dir, 'ack'));
        this.persistedCursor = cursor;
      } catch (err) {
        this.logger.warn({ err, dir: this.dir }, 'outbox: could not persist the ack cursor (entries may be re-sent after a restart)');
      }
    });
    return this.cursorWrite;
  }

  private async fsyncNow(): Promise<void> {
    if (!this.fsyncDirty || !this.current) return;
    this.fsyncDirty = false;
    await this.current.fh.datasync().catch((err) => this.logger.warn({ err }, 'outbox: fdatasync failed'));
  }
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
  if (!Number.isSafeInteger(cursor) || cursor < 0) {
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

function encodeRecord(e: Stored): string {
  const record: DiskRecord = { id: e.id, ts: e.ts, topic: e.topic, qos: e.qos, retain: e.retain ?? false };
  if (typeof e.payload === 'string') record.payload = e.payload;
  else record.payload64 = e.payload.toString('base64');
  return JSON.stringify(record);
}

/** Yields a Stored per line, or null for a line that is not a complete, valid record. */
function* parseSegment(data: Buffer): Generator<Stored | null> {
  let start = 0;
  while (start < data.length) {
    let end = data.indexOf(0x0a, start);
    if (end === -1) end = data.length; // torn tail: still try, a record missing only its newline is whole
    const line = data.subarray(start, end);
    start = end + 1;
    if (line.length === 0) continue;
    yield decodeRecord(line);
  }
}

function decodeRecord(line: Buffer): Stored | null {
  let r: Partial<DiskRecord>;
  try {
    r = JSON.parse(line.toString('utf8')) as Partial<DiskRecord>;
  } catch {
    return null;
  }
  if (typeof r !== 'object' || r === null) return null;
  if (!Number.isSafeInteger(r.id) || (r.id as number) <= 0 || typeof r.ts !== 'number' || typeof r.topic !== 'string') return null;
  if (r.qos !== 0 && r.qos !== 1 && r.qos !== 2) return null;
  let payload: string | Buffer;
  if (typeof r.payload === 'string') payload = r.payload;
  else if (typeof r.payload64 === 'string') payload = Buffer.from(r.payload64, 'base64');
  else return null;
  return {
    id: r.id as number,
    ts: r.ts,
    topic: r.topic,
    qos: r.qos,
    retain: r.retain === true,
    payload,
    bytes: line.length + 1,
    acked: false,
  };
}

function checkInput(input: OutboxEntryInput): string | null {
  if (typeof input !== 'object' || input === null) return 'entry must be an object';
  if (typeof input.topic !== 'string' || input.topic.length === 0) return 'topic must be a non-empty string';
  if (input.topic.includes('+') || input.topic.includes('#')) return `topic "${input.topic}" must not contain wildcards`;
  if (typeof input.payload !== 'string' && !Buffer.isBuffer(input.payload)) return 'payload must be a string or a Buffer';
  if (input.qos !== 0 && input.qos !== 1 && input.qos !== 2) return `qos must be 0, 1 or 2, got ${String(input.qos)}`;
  return null;
}

function publicEntry(s: Stored): OutboxEntry {
  return { id: s.id, ts: s.ts, topic: s.topic, payload: s.payload, qos: s.qos, retain: s.retain ?? false };
}
