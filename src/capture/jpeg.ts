/**
 * JPEG byte-level helpers: a check for complete files and a splitter for concatenated MJPEG streams.
 *
 * Why not search for FF D9: an APP1 (EXIF) segment can hold a thumbnail with its own SOI/EOI, so the
 * first FF D9 after FF D8 may end the thumbnail, not the frame. The splitter walks segment lengths up to
 * SOS and then scans entropy-coded data, where FF 00 is byte stuffing and FF D0–D7 are restart markers.
 */

const MARKER = 0xff;
const SOI = 0xd8;
const EOI = 0xd9;
const SOS = 0xda;
const TEM = 0x01;

function isRestart(marker: number): boolean {
  return marker >= 0xd0 && marker <= 0xd7;
}

/** Why `data` is not a complete JPEG file, or undefined when it starts with SOI and ends with EOI. */
export function jpegProblem(data: Buffer): string | undefined {
  if (data.length === 0) return 'the image is empty';
  if (data.length < 4 || data[0] !== MARKER || data[1] !== SOI) return 'the data is not a JPEG (no SOI marker)';
  if (data[data.length - 2] !== MARKER || data[data.length - 1] !== EOI) {
    return 'the JPEG is truncated (no EOI marker at the end)';
  }
  return undefined;
}

export interface JpegSplitterStats {
  /** Bytes thrown away: garbage between frames, corrupt or oversized partial frames. */
  discardedBytes: number;
}

type State = 'seek' | 'segments' | 'entropy';

/**
 * Incremental splitter: push stream chunks in, get complete JPEG frames out (each a fresh copy).
 * Tolerates leading garbage, frames split across chunks, several frames per chunk; a frame cut short by
 * a new SOI is dropped and parsing resumes at that SOI.
 */
export class JpegStreamSplitter {
  private buf: Buffer = Buffer.alloc(0);
  /** Where the current frame starts in buf (valid outside 'seek'). */
  private frameStart = 0;
  /** Where parsing resumes in buf. */
  private pos = 0;
  private state: State = 'seek';
  private pushedBytes = 0;
  private emittedBytes = 0;

  constructor(private readonly maxFrameBytes = 32 * 1024 * 1024) {}

  push(chunk: Buffer): Buffer[] {
    this.pushedBytes += chunk.length;
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const frames: Buffer[] = [];
    for (;;) {
      const frame = this.step();
      if (frame === 'need-more') break;
      if (frame) frames.push(frame);
    }
    this.compact();
    return frames;
  }

  /** Drops a partial frame (e.g. when the producer restarts); returns how many bytes were dropped. */
  reset(): number {
    const dropped = this.buf.length;
    this.buf = Buffer.alloc(0);
    this.frameStart = 0;
    this.pos = 0;
    this.state = 'seek';
    return dropped;
  }

  /** Bytes of an unfinished frame (or garbage) currently held. */
  get pendingBytes(): number {
    return this.buf.length;
  }

  stats(): JpegSplitterStats {
    // Everything pushed is either emitted, still pending, or was thrown away.
    return { discardedBytes: this.pushedBytes - this.emittedBytes - this.buf.length };
  }

  /** One parsing step: a finished frame, null to continue, or 'need-more' when the buffer is exhausted. */
  private step(): Buffer | null | 'need-more' {
    const buf = this.buf;
    if (this.state !== 'seek' && this.pos - this.frameStart > this.maxFrameBytes) {
      this.resync(this.frameStart + 1);
      return null;
    }
    switch (this.state) {
      case 'seek': {
        let i = buf.indexOf(MARKER, this.pos);
        while (i !== -1 && i + 1 < buf.length && buf[i + 1] !== SOI) i = buf.indexOf(MARKER, i + 1);
        if (i === -1) {
          this.pos = buf.length;
          return 'need-more';
        }
        if (i + 1 >= buf.length) {
          this.pos = i;
          return 'need-more';
        }
        this.frameStart = i;
        this.pos = i + 2;
        this.state = 'segments';
        return null;
      }
      case 'segments': {
        let i = this.pos;
        if (i >= buf.length) return 'need-more';
        if (buf[i] !== MARKER) {
          // Not a marker where one must be: this is not a valid frame.
          this.resync(this.frameStart + 1);
          return null;
        }
        while (i < buf.length && buf[i] === MARKER) i++; // FF fill bytes may precede a marker
        if (i >= buf.length) return 'need-more';
        const marker = buf[i]!;
        const afterMarker = i + 1;
        if (marker === EOI) {
          const frame = Buffer.from(buf.subarray(this.frameStart, afterMarker));
          this.emittedBytes += frame.length;
          this.state = 'seek';
          this.pos = afterMarker;
          this.frameStart = afterMarker;
          return frame;
        }
        if (marker === SOI) {
          // A new frame began before this one ended: drop the cut-short frame.
          this.resync(i - 1);
          return null;
        }
        if (isRestart(marker) || marker === TEM) {
          this.pos = afterMarker;
          return null;
        }
        if (afterMarker + 2 > buf.length) return 'need-more';
        const length = buf.readUInt16BE(afterMarker);
        if (length < 2) {
          this.resync(this.frameStart + 1);
          return null;
        }
        const segmentEnd = afterMarker + length;
        if (segmentEnd > buf.length) return 'need-more';
        this.pos = segmentEnd;
        if (marker === SOS) this.state = 'entropy';
        return null;
      }
      case 'entropy': {
        let i = buf.indexOf(MARKER, this.pos);
        for (;;) {
          if (i === -1) {
            this.pos = buf.length;
            return 'need-more';
          }
          if (i + 1 >= buf.length) {
            this.pos = i;
            return 'need-more';
          }
          const next = buf[i + 1]!;
          if (next === 0x00 || isRestart(next)) {
            i = buf.indexOf(MARKER, i + 2);
            continue;
          }
          if (next === MARKER) {
            i = i + 1; // fill byte; the following FF starts the marker
            continue;
          }
          this.pos = i;
          this.state = 'segments';
          return null;
        }
      }
    }
  }

  /** Give up on the current frame and look for the next SOI from `from`. */
  private resync(from: number): void {
    this.state = 'seek';
    this.pos = from;
    this.frameStart = from;
  }

  /** Drop consumed bytes so the buffer holds at most one unfinished frame. */
  private compact(): void {
    const keepFrom = this.state === 'seek' ? this.pos : this.frameStart;
    if (keepFrom === 0) return;
    this.buf = this.buf.subarray(keepFrom);
    this.pos -= keepFrom;
    this.frameStart -= keepFrom;
  }
}
