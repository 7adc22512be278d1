/**
 * Per-source Result `seq` (docs/ARCHITECTURE.md, "Durability"): +1 per published Result, continuing across restarts so a
 * consumer that sees a gap knows it missed something — and never reusing a number, since consumers
 * de-duplicate by (source, seq).
 *
 * With an outbox (the daemon), the seq is made durable by the outbox itself: next() tells it
 * (noteSeq), and the outbox writes the new high-water mark in the same write(2) — and fdatasync, with
 * `fsyncIntervalMs` 0 — as the Result that carries it, off the event loop. open() takes the highest of
 * `seq.json` and what the outbox found on disk; `seq.json` is written only at open and close.
 *
 * Without an outbox, each next() rewrites `seq.json` with one pwrite(2): no fsync, but the write
 * reaches the kernel, so it survives `kill -9`.
 */
import { closeSync, fdatasyncSync, fstatSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { resultSeq } from './outbox.js';

/** Where Results are made durable (the Outbox): it records seq numbers with them and reports them at open. */
export interface PendingResults {
  /** Highest seq per source found on disk (preferred). */
  seqHighWater?(): ReadonlyMap<string, number>;
  /** Told every seq handed out, to persist it with the next write. */
  noteSeq?(source: string, seq: number): void;
  /** Results not yet acknowledged; their payloads are read for a seq when seqHighWater is missing. */
  pending?(): Iterable<{ payload: string | Buffer }>;
}

export const SEQ_FILE = 'seq.json';

export class SeqStore {
  private fd: number | null;
  private writtenLength = 0;

  private constructor(
    path: string,
    private readonly last: Map<string, number>,
    private readonly sink: PendingResults | undefined,
  ) {
    closeSync(openSync(path, 'a'));
    // 'r+' (not 'a'): positional writes at offset 0 replace the content in place.
    this.fd = openSync(path, 'r+');
    // Pad over whatever is there, even an unreadable old file, so no stale tail survives.
    this.writtenLength = fstatSync(this.fd).size;
  }

  /** Opens `<stateDir>/seq.json`; pass the opened outbox so it carries the seq numbers and those on disk count. */
  static open(stateDir: string, outbox?: PendingResults, logger?: Logger): SeqStore {
    mkdirSync(stateDir, { recursive: true });
    const path = join(stateDir, SEQ_FILE);
    const last = readSeqFile(path, logger);
    let raised = 0;
    const found: Iterable<[string, number]> = outbox?.seqHighWater
      ? outbox.seqHighWater()
      : [...(outbox?.pending?.() ?? [])].flatMap(({ payload }) => {
          const r = resultSeq(payload);
          return r ? [[r.source, r.seq] as [string, number]] : [];
        });
    for (const [source, seq] of found) {
      if (seq > (last.get(source) ?? 0)) {
        last.set(source, seq);
        raised++;
      }
    }
    if (raised > 0) logger?.info({ raised }, 'seq: continued from the outbox');
    const store = new SeqStore(path, last, outbox?.noteSeq ? outbox : undefined);
    store.write();
    return store;
  }

  /** The seq for the next Result of this source (1 for a source never seen). */
  next(sourceId: string): number {
    if (this.fd === null) throw new Error('seq store is closed');
    const seq = (this.last.get(sourceId) ?? 0) + 1;
    this.last.set(sourceId, seq);
    if (this.sink) this.sink.noteSeq!(sourceId, seq);
    else this.write();
    return seq;
  }

  /** The last seq handed out for this source, 0 if none. */
  current(sourceId: string): number {
    return this.last.get(sourceId) ?? 0;
  }

  /** Writes the counters and forces them to stable storage (clean shutdown). */
  flush(): void {
    if (this.fd === null) return;
    this.write();
    fdatasyncSync(this.fd);
  }

  close(): void {
    if (this.fd === null) return;
    this.flush();
    closeSync(this.fd);
    this.fd = null;
  }

  private write(): void {
    if (this.fd === null) throw new Error('seq store is closed');
    const json = JSON.stringify(Object.fromEntries(this.last));
    // Counters only grow, so the text rarely shrinks; pad with spaces (valid JSON whitespace)
    // instead of truncating, to keep it one syscall.
    const text = json.padEnd(this.writtenLength, ' ');
    const buf = Buffer.from(text, 'utf8');
    writeSync(this.fd, buf, 0, buf.length, 0);
    this.writtenLength = Math.max(this.writtenLength, buf.length);
  }
}

function readSeqFile(path: string, logger: Logger | undefined): Map<string, number> {
  const last = new Map<string, number>();
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return last;
    throw err;
  }
  if (text.trim() === '') return last;
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
    for (const [source, seq] of Object.entries(parsed)) {
      if (Number.isSafeInteger(seq) && (seq as number) >= 0) last.set(source, seq as number);
    }
  } catch (err) {
    const message = 'seq: unreadable counter file; seq restarts from what the outbox holds';
    if (logger) logger.error({ err, path }, message);
    else process.emitWarning(`${message} (${path}: ${(err as Error).message})`);
  }
  return last;
}
