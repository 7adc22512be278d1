/**
 * Frames a streaming source replaced before the pipeline took them (its `dropped` counter) reach the
 * event bus as frameSkipped 'stale' with their count, so frames_dropped_total{reason="stale"} counts them.
 */
import pino from 'pino';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { SourceExhaustedError, SourceStoppedError, type Frame, type FrameSource } from '../../src/capture/index.js';
import { SourcePipeline } from '../../src/daemon/source-pipeline.js';
import { DaemonEventBus } from '../../src/features/index.js';
import { Metrics } from '../../src/ops/index.js';
import { createPreprocessor } from '../../src/vision/index.js';
import { fakeModel } from '../helpers/fake-daemon.js';

/** Each frame comes with the number of frames the source says it replaced before it. */
class DroppingSource implements FrameSource {
  readonly backend = 'ffmpeg' as const;
  private captured = 0;
  private dropped = 0;
  private stopped = false;
  constructor(
    readonly id: string,
    private readonly drops: number[],
    private readonly jpeg: Buffer,
  ) {}
  async start() {}
  async stop() {
    this.stopped = true;
  }
  stats() {
    return { captured: this.captured, failed: 0, dropped: this.dropped };
  }
  async next(): Promise<Frame> {
    if (this.stopped) throw new SourceStoppedError(this.id);
    const drop = this.drops.shift();
    if (drop === undefined) throw new SourceExhaustedError(this.id);
    this.dropped += drop;
    this.captured += 1;
    return { sourceId: this.id, captureSeq: this.captured, capturedAt: new Date(), data: this.jpeg };
  }
}

describe('stale frames', () => {
  it("mirrors the source's dropped counter into frameSkipped 'stale' and the metric", async () => {
    const jpeg = await sharp({ create: { width: 32, height: 24, channels: 3, background: '#336699' } })
      .jpeg()
      .toBuffer();
    const events = new DaemonEventBus();
    const metrics = new Metrics();
    const stale: number[] = [];
    events.on('frameSkipped', ({ source, reason, count }) => {
      if (reason === 'stale') stale.push(count ?? 1);
      metrics.frameDropped(source, reason, count);
    });
    const finished = new Promise<void>((resolve) => events.on('sourceFinished', () => resolve()));
    const pipeline = new SourcePipeline({
      source: new DroppingSource('cam', [0, 3, 0, 2, 1], jpeg),
      runner: { intervalMs: 0, retryInitialMs: 1, retryMaxMs: 2, retryJitter: 0 },
      preprocess: createPreprocessor(fakeModel.manifest.input),
      engine: { provider: 'fake', run: async () => ({ scores: new Float32Array([0.2, 0.8]), inferenceMs: 1 }) },
      model: { name: 'fake', precision: 'int8', activation: 'softmax' },
      labelSettings: () => ({ topK: 1, threshold: 0 }),
      nextSeq: () => 1,
      publish: async () => undefined,
      events,
      logger: pino({ level: 'silent' }),
    });
    pipeline.start();
    await finished;
    await pipeline.stop();
    expect(stale).toEqual([3, 2, 1]);
    expect(metrics.peek().drops.stale).toBe(6);
    expect(await metrics.prometheus()).toContain('inceptiond_frames_dropped_total{source="cam",reason="stale"} 6');
    metrics.close();
  });
});
