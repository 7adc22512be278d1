/**
 * Per-source Result `seq` (docs/ARCHITECTURE.md, "Durability"): +1 per published Result, continuing across restarts so a
 * consumer that sees a gap knows it missed something — and never reusing a number, since consumers
 * de-duplicate by (source, seq).
 *
 * Each next() rewrites a small file with one pwrite(2): no fsync, but the write reaches the kernel,
 * so it survives `kill -9`. A power cut can lose it; open() therefore also takes the newest seq
 * found in the outbox (fsynced there when `fsyncIntervalMs` is set) and continues from the max.
 */
import { closeSync, fdatasyncSync, fstatSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';

/** Where Results not yet acknowledged are kept (the Outbox); their seq numbers count at open. */
export interface PendingResults {
  pending(): Iterable<{ payload: string | Buffer }>;
}

export const SEQ_FILE = 'seq.json';

export class SeqStore {
  private fd: number | null;
  private writtenLength = 0;

  private constructor(
    path: string,
    private readonly last: Map<string, number>,
  ) {
    closeSync(openSync(path, 'a'));
    // 'r+' (not 'a'): positional writes at offset 0 replace the content in place.
    this.fd = openSync(path, 'r+');
    // Pad over whatever is there, even an unreadable old file, so no stale tail survives.
    this.writtenLength = fstatSync(this.fd).size;
  }

  /** Opens `<stateDir>/seq.json`; pass the opened outbox so Results still queued there are counted. */
  static open(stateDir: string, outbox?: PendingResults, logger?: Logger): SeqStore {
    mkdirSync(stateDir, { recursive: true });
    const path = join(stateDir, SEQ_FILE);
    const last = readSeqFile(path, logger);
    let raised = 0;
    for (const { payload } of outbox?.pending() ?? []) {
      const found = resultSeq(payload);
      if (found && found.seq > (last.get(found.source) ?? 0)) {
        last.set(found.source, found.seq);
        raised++;
      }
    }
    if (raised > 0) logger?.info({ raised }, 'seq: continued from Results still in the outbox');
    const store = new SeqStore(path, last);
    store.write();
    return store;
  }

  /** The seq for the next Result of this source (1 for a source never seen). */
  next(sourceId: string): number {
    const seq = (this.last.get(sourceId) ?? 0) + 1;
    this.last.set(sourceId, seq);
    this.write();
    return seq;
  }

  /** The last seq handed out for this source, 0 if none. */
  current(sourceId: string): number {
    return this.last.get(sourceId) ?? 0;
  }

  /** Forces the counters to stable storage (for a clean shutdown or a periodic timer). */
  flush(): void {
    if (this.fd !== null) fdatasyncSync(this.fd);
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

function resultSeq(payload: string | Buffer): { source: string; seq: number } | null {
  try {
    const parsed: unknown = JSON.parse(typeof payload === 'string' ? payload : payload.toString('utf8'));
    if (typeof parsed !== 'object' || parsed === null) return null;
    const { source, seq } = parsed as { source?: unknown; seq?: unknown };
    return typeof source === 'string' && Number.isSafeInteger(seq) ? { source, seq: seq as number } : null;
  } catch {
    return null;
  }
}
