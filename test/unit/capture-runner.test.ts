import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  CaptureError,
  CaptureRunner,
  CorruptFrameError,
  SourceExhaustedError,
  type Frame,
  type FrameSource,
  type SourceHealth,
  type SourceStats,
} from '../../src/capture/index.js';

const logger = pino({ level: 'silent' });

type Step = 'frame' | Error;

/** A FrameSource that plays a script of outcomes and records when (fake clock) each next() began. */
class ScriptedSource implements FrameSource {
  readonly id = 'cam';
  readonly backend = 'files' as const;
  readonly calls: number[] = [];
  readonly signals: Array<AbortSignal | undefined> = [];
  started = false;
  stopped = false;
  private seq = 0;
  private failed = 0;

  constructor(
    private readonly script: Step[],
    private readonly fallback: Step = 'frame',
  ) {}

  async start(): Promise<void> {
    this.started = true;
  }
  async stop(): Promise<void> {
    this.stopped = true;
  }
  async next(signal?: AbortSignal): Promise<Frame> {
    this.calls.push(Date.now());
    this.signals.push(signal);
    const step = this.script.shift() ?? this.fallback;
    if (step !== 'frame') {
      if (step instanceof CaptureError) this.failed++;
      throw step;
    }
    return { sourceId: this.id, captureSeq: ++this.seq, capturedAt: new Date(), data: Buffer.from([this.seq]) };
  }
  stats(): SourceStats {
    return { captured: this.seq, failed: this.failed, dropped: 0 };
  }
}

const fail = (message: string): CaptureError => new CaptureError(message, 'cam');
const corrupt = (message: string): CorruptFrameError => new CorruptFrameError(message, 'cam');

function track<T>(promise: Promise<T>): { settled: () => boolean; promise: Promise<T> } {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  return { settled: () => settled, promise };
}

describe('CaptureRunner', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 0 });
  });
  afterEach(() => {
    vi.useRealTimers();
    vi.restoreAllMocks();
  });

  it('starts captures at least intervalMs apart', async () => {
    const source = new ScriptedSource([]);
    const runner = new CaptureRunner(source, { intervalMs: 1000, logger });
    await runner.next();
    const second = track(runner.next());
    await vi.advanceTimersByTimeAsync(999);
    expect(second.settled()).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(second.settled()).toBe(true);
    expect((await second.promise).captureSeq).toBe(2);
    // A consumer that comes back late does not wait again.
    await vi.advanceTimersByTimeAsync(5000);
    await runner.next();
    expect(source.calls).toEqual([0, 1000, 6000]);
  });

  it('does not wait at all with intervalMs 0', async () => {
    const source = new ScriptedSource([]);
    const runner = new CaptureRunner(source, { intervalMs: 0, logger });
    for (let i = 0; i < 3; i++) await runner.next();
    expect(source.calls).toEqual([0, 0, 0]);
  });

  it('retries failures with capped exponential backoff, reports health, then recovers', async () => {
    const source = new ScriptedSource([fail('busy'), fail('busy'), fail('gone'), 'frame']);
    const runner = new CaptureRunner(source, { intervalMs: 0, retryInitialMs: 100, retryMaxMs: 250, retryJitter: 0, logger });
    const events: SourceHealth[] = [];
    runner.on('health', (health) => events.push(health));

    const frame = track(runner.next());
    await vi.advanceTimersByTimeAsync(549);
    expect(frame.settled()).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect((await frame.promise).captureSeq).toBe(1);

    expect(source.calls).toEqual([0, 100, 300, 550]);
    expect(events.map(({ state, failures, error }) => ({ state, failures, error }))).toEqual([
      { state: 'failing', failures: 1, error: 'busy' },
      { state: 'failing', failures: 2, error: 'busy' },
      { state: 'failing', failures: 3, error: 'gone' },
      { state: 'ok', failures: 0, error: undefined },
    ]);
    // "since" marks when the failing spell began, and when it ended.
    expect(events.slice(0, 3).map((e) => e.since.getTime())).toEqual([0, 0, 0]);
    expect(events[3]!.since.getTime()).toBe(550);
    expect(runner.health().state).toBe('ok');
    expect(runner.stats().failed).toBe(3);
  });

  it('skips a corrupt frame at the normal pace without reporting the source as failing', async () => {
    const source = new ScriptedSource([corrupt('truncated'), 'frame', corrupt('truncated'), corrupt('not a JPEG'), 'frame']);
    const runner = new CaptureRunner(source, { intervalMs: 100, retryInitialMs: 5000, retryJitter: 0, logger });
    const health: SourceHealth[] = [];
    const skipped: string[] = [];
    runner.on('health', (h) => health.push(h));
    runner.on('corrupt', (err) => skipped.push(err.message));
    const first = track(runner.next());
    await vi.advanceTimersByTimeAsync(100);
    expect((await first.promise).captureSeq).toBe(1);
    const second = track(runner.next());
    await vi.advanceTimersByTimeAsync(300);
    expect((await second.promise).captureSeq).toBe(2);
    expect(skipped).toEqual(['truncated', 'truncated', 'not a JPEG']);
    expect(health).toEqual([]);
    // Paced by intervalMs, never by the 5 s retry backoff.
    expect(source.calls).toEqual([0, 100, 200, 300, 400]);
  });

  it('reports a source failing once corruptFramesToFail frames in a row were corrupt', async () => {
    const source = new ScriptedSource([corrupt('bad'), corrupt('bad'), corrupt('bad'), 'frame']);
    const runner = new CaptureRunner(source, { intervalMs: 0, retryInitialMs: 100, retryJitter: 0, corruptFramesToFail: 3, logger });
    const health: SourceHealth[] = [];
    runner.on('health', (h) => health.push(h));
    const frame = track(runner.next());
    await vi.advanceTimersByTimeAsync(100);
    expect((await frame.promise).captureSeq).toBe(1);
    expect(health.map((h) => h.state)).toEqual(['failing', 'ok']);
    expect(health[0]!.error).toBe('bad');
  });

  it('restarts the backoff from retryInitialMs after a success', async () => {
    const source = new ScriptedSource([fail('a'), fail('b'), 'frame', fail('c'), 'frame']);
    const runner = new CaptureRunner(source, { intervalMs: 0, retryInitialMs: 100, retryMaxMs: 10_000, retryJitter: 0, logger });
    const first = runner.next();
    await vi.advanceTimersByTimeAsync(300);
    await first;
    const second = runner.next();
    await vi.advanceTimersByTimeAsync(100);
    await second;
    expect(source.calls).toEqual([0, 100, 300, 300, 400]);
  });

  it('shortens each delay by at most retryJitter', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.999_999);
    const source = new ScriptedSource([fail('x'), 'frame']);
    const runner = new CaptureRunner(source, { intervalMs: 0, retryInitialMs: 1000, retryJitter: 0.5, logger });
    const frame = runner.next();
    await vi.advanceTimersByTimeAsync(1000);
    await frame;
    expect(source.calls).toEqual([0, 500]);
  });

  it('stops promptly when aborted during a backoff wait, leaving no timer behind', async () => {
    const source = new ScriptedSource([], fail('camera unplugged'));
    const runner = new CaptureRunner(source, { intervalMs: 0, retryInitialMs: 60_000, logger });
    const controller = new AbortController();
    const pending = track(runner.next(controller.signal));
    await vi.advanceTimersByTimeAsync(0);
    expect(source.calls).toEqual([0]);
    expect(pending.settled()).toBe(false);
    controller.abort(new Error('daemon stopping'));
    await expect(pending.promise).rejects.toThrow('daemon stopping');
    expect(vi.getTimerCount()).toBe(0);
    expect(source.calls).toEqual([0]);
  });

  it('stops promptly when aborted during the pacing wait', async () => {
    const source = new ScriptedSource([]);
    const runner = new CaptureRunner(source, { intervalMs: 60_000, logger });
    await runner.next();
    const controller = new AbortController();
    const pending = runner.next(controller.signal);
    controller.abort(new Error('daemon stopping'));
    await expect(pending).rejects.toThrow('daemon stopping');
    expect(source.calls).toHaveLength(1);
  });

  it('passes the signal to the source so a capture in progress can be abandoned', async () => {
    const controller = new AbortController();
    const source = new ScriptedSource([]);
    source.next = (signal?: AbortSignal) =>
      new Promise<Frame>((_resolve, reject) => signal?.addEventListener('abort', () => reject(signal.reason)));
    const runner = new CaptureRunner(source, { intervalMs: 0, logger });
    const events: SourceHealth[] = [];
    runner.on('health', (health) => events.push(health));
    const pending = runner.next(controller.signal);
    controller.abort(new Error('stop'));
    await expect(pending).rejects.toThrow('stop');
    expect(events).toEqual([]); // an abort is not a capture failure
  });

  it('passes SourceExhaustedError through without retrying or reporting a failure', async () => {
    const source = new ScriptedSource([new SourceExhaustedError('cam')]);
    const runner = new CaptureRunner(source, { intervalMs: 0, logger });
    const events: SourceHealth[] = [];
    runner.on('health', (health) => events.push(health));
    await expect(runner.next()).rejects.toBeInstanceOf(SourceExhaustedError);
    expect(events).toEqual([]);
    expect(source.calls).toHaveLength(1);
  });

  it('retries unexpected (non-capture) errors too, so a bug in a source does not stop the daemon', async () => {
    const source = new ScriptedSource([new RangeError('bug'), 'frame']);
    const runner = new CaptureRunner(source, { intervalMs: 0, retryInitialMs: 10, retryJitter: 0, logger });
    const events: SourceHealth[] = [];
    runner.on('health', (health) => events.push(health));
    const frame = runner.next();
    await vi.advanceTimersByTimeAsync(10);
    await expect(frame).resolves.toMatchObject({ captureSeq: 1 });
    expect(events.map((e) => [e.state, e.error])).toEqual([
      ['failing', 'bug'],
      ['ok', undefined],
    ]);
    expect(runner.stats().failed).toBe(1);
  });

  it('delegates start and stop to the source and refuses nonsense options', async () => {
    const source = new ScriptedSource([]);
    const runner = new CaptureRunner(source, { intervalMs: 0, logger });
    await runner.start();
    await runner.stop();
    expect([source.started, source.stopped]).toEqual([true, true]);
    expect(() => new CaptureRunner(source, { intervalMs: -1, logger })).toThrow(/intervalMs/);
    expect(() => new CaptureRunner(source, { intervalMs: 0, retryInitialMs: 500, retryMaxMs: 100, logger })).toThrow(/retryMaxMs/);
  });
});
