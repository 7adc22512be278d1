/**
 * One source pipeline in-process: a fake source and a fake engine (so failures, hangs and the end of a
 * source happen on cue), the real preprocessor and a real outbox for the Results.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import sharp from 'sharp';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CaptureError, SourceExhaustedError, SourceStoppedError, type Frame, type FrameSource } from '../../src/capture/index.js';
import { SourcePipeline, type Inferencer } from '../../src/daemon/source-pipeline.js';
import { DaemonEventBus, type DaemonEvents } from '../../src/features/index.js';
import type { InferenceOutput, InputTensor } from '../../src/inference/index.js';
import { Outbox, validateResult, type ResultPayload } from '../../src/publish/index.js';
import { createPreprocessor, type InputSpec } from '../../src/vision/index.js';

const logger = pino({ level: 'silent' });
const spec: InputSpec = {
  name: 'x',
  layout: 'NCHW',
  width: 8,
  height: 8,
  channels: 'RGB',
  scale: 1,
  mean: [0, 0, 0],
  std: [1, 1, 1],
  resize: 'fill',
};
let jpeg: Buffer;

beforeAll(async () => {
  jpeg = await sharp({ create: { width: 32, height: 24, channels: 3, background: '#2050c0' } })
    .jpeg()
    .toBuffer();
});

/** Frames on cue: `script` says what each next() does — a frame, a capture error, not an image, or the end. */
class ScriptedSource implements FrameSource {
  readonly backend = 'files' as const;
  private n = 0;
  private stopped = false;
  constructor(
    readonly id: string,
    private readonly script: Array<'frame' | 'fail' | 'garbage' | 'end'>,
  ) {}
  async start() {}
  async stop() {
    this.stopped = true;
  }
  stats() {
    return { captured: this.n, failed: 0, dropped: 0 };
  }
  async next(): Promise<Frame> {
    if (this.stopped) throw new SourceStoppedError(this.id);
    const step = this.script.shift() ?? 'end';
    if (step === 'end') throw new SourceExhaustedError(this.id);
    if (step === 'fail') throw new CaptureError('camera unplugged', this.id);
    this.n += 1;
    return { sourceId: this.id, captureSeq: this.n, capturedAt: new Date(), data: step === 'garbage' ? Buffer.from('not an image') : jpeg };
  }
}

/** Scores with the winning class chosen per call; `behaviour` makes a run fail or never answer. */
function fakeEngine(behaviour: (call: number) => 'ok' | 'fail' | 'hang' = () => 'ok'): Inferencer & { calls: number } {
  const engine = {
    provider: 'fake',
    calls: 0,
    run(tensor: InputTensor) {
      const call = ++engine.calls;
      const what = behaviour(call);
      if (what === 'hang') return new Promise<never>(() => undefined);
      if (what === 'fail') return Promise.reject(new Error('worker died'));
      const scores = new Float32Array(4).fill(0.1);
      scores[call % 4] = 0.7;
      // Hands the input back, as the real engine's worker does.
      return Promise.resolve({ scores, inferenceMs: 1, input: tensor.data });
    },
  };
  return engine;
}

let dir: string | undefined;
let outbox: Outbox | undefined;
afterEach(async () => {
  await outbox?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
  outbox = dir = undefined;
});

async function pipelineWith(
  source: FrameSource,
  engine: Inferencer,
  labelSettings = () => ({ topK: 2, threshold: 0 }),
  handOver?: (result: ResultPayload, store: () => Promise<number>) => Promise<number>,
) {
  dir = await mkdtemp(path.join(tmpdir(), 'pipeline-'));
  outbox = await Outbox.open(dir, { maxMessages: 1000, maxBytes: 1e7, maxAgeSec: 0 }, logger);
  const events = new DaemonEventBus();
  const seen: Array<[keyof DaemonEvents, unknown]> = [];
  for (const name of ['frame', 'captureFailed', 'captureRecovered', 'frameSkipped', 'sourceFinished', 'inference', 'result'] as const) {
    events.on(name, (payload: unknown) => seen.push([name, payload]));
  }
  let seq = 0;
  const box = outbox;
  const pipeline = new SourcePipeline({
    source,
    runner: { intervalMs: 0, retryInitialMs: 1, retryMaxMs: 2, retryJitter: 0 },
    preprocess: createPreprocessor(spec),
    engine,
    model: { name: 'fake', precision: 'int8', labels: ['a', 'b', 'c', 'd'], activation: 'softmax' },
    labelSettings,
    nextSeq: () => ++seq,
    publish: (result: ResultPayload) => {
      const store = () => box.append({ topic: `t/${result.source}/labels`, payload: JSON.stringify(result), qos: 1 });
      return handOver ? handOver(result, store) : store();
    },
    events,
    logger,
  });
  const finished = new Promise<void>((resolve) => events.on('sourceFinished', () => resolve()));
  return { pipeline, events, seen, finished, outbox: box };
}

describe('SourcePipeline', () => {
  it('turns frames into Results in the outbox, skipping what is not an image and riding out capture failures', async () => {
    const source = new ScriptedSource('cam', ['frame', 'garbage', 'fail', 'fail', 'frame', 'frame', 'end']);
    const { pipeline, seen, finished, events, outbox: box } = await pipelineWith(source, fakeEngine());
    let storedWhenFinished = -1;
    events.on('sourceFinished', () => {
      storedWhenFinished = box.nextBatch(0, 100).length;
    });
    pipeline.start();
    await finished;
    await pipeline.stop();
    // "finished" comes once every frame has its Result stored, the last one included.
    expect(storedWhenFinished).toBe(3);

    const results = box.nextBatch(0, 100).map((e) => JSON.parse(String(e.payload)) as ResultPayload);
    expect(results.map((r) => r.seq)).toEqual([1, 2, 3]);
    for (const r of results) expect(validateResult(r)).toMatchObject({ ok: true });
    expect(results[0]).toMatchObject({
      source: 'cam',
      provider: 'fake',
      model: { name: 'fake', precision: 'int8' },
      frame: { width: 32, height: 24 },
    });
    expect(results[0]!.labels).toHaveLength(2);
    const names = seen.map(([name]) => name);
    expect(names.filter((n) => n === 'frameSkipped')).toHaveLength(1);
    expect(seen.find(([n]) => n === 'frameSkipped')![1]).toMatchObject({ reason: 'corrupt' });
    expect(names.filter((n) => n === 'captureFailed')).toHaveLength(2);
    expect(names.filter((n) => n === 'captureRecovered')).toHaveLength(1);
    expect(names.filter((n) => n === 'sourceFinished')).toHaveLength(1);
  });

  it('a failed inference skips that frame and says so; the next frame is classified', async () => {
    const source = new ScriptedSource('cam', ['frame', 'frame', 'end']);
    const {
      pipeline,
      seen,
      finished,
      outbox: box,
    } = await pipelineWith(
      source,
      fakeEngine((call) => (call === 1 ? 'fail' : 'ok')),
    );
    pipeline.start();
    await finished;
    await pipeline.stop();
    expect(box.depth).toBe(1);
    expect(seen.filter(([n]) => n === 'inference').map(([, p]) => p)).toEqual([
      { source: 'cam', ok: false, error: 'worker died' },
      { source: 'cam', ok: true },
    ]);
    expect(seen.find(([n]) => n === 'frameSkipped')![1]).toMatchObject({ reason: 'inference', error: 'worker died' });
  });

  it('reads top-k per frame, so a reload applies to the next Result', async () => {
    let topK = 1;
    const source = new ScriptedSource('cam', ['frame', 'frame', 'end']);
    const { pipeline, events, finished, outbox: box } = await pipelineWith(source, fakeEngine(), () => ({ topK, threshold: 0 }));
    events.once('result', () => (topK = 3));
    pipeline.start();
    await finished;
    await pipeline.stop();
    const counts = box.nextBatch(0, 10).map((e) => (JSON.parse(String(e.payload)) as ResultPayload).labels.length);
    expect(counts).toEqual([1, 3]);
  });

  it('stops within its deadline when the engine never answers, and stops the source', async () => {
    const source = new ScriptedSource('cam', Array(50).fill('frame'));
    const { pipeline, events } = await pipelineWith(
      source,
      fakeEngine(() => 'hang'),
    );
    const captured = new Promise<void>((resolve) => events.on('frame', () => resolve()));
    pipeline.start();
    await captured;
    const t0 = performance.now();
    await pipeline.stop(300);
    expect(performance.now() - t0).toBeLessThan(5_000);
    await expect(source.next()).rejects.toBeInstanceOf(SourceStoppedError);
  });

  it('infers the next frame while the last Result is still being stored, keeping at most one store outstanding and the order', async () => {
    const timeline: string[] = [];
    let releaseFirst: () => void = () => undefined;
    const firstStoreHeld = new Promise<void>((resolve) => (releaseFirst = resolve));
    const base = fakeEngine();
    const engine: Inferencer = {
      provider: base.provider,
      run(tensor) {
        timeline.push(`run ${base.calls + 1}`);
        // The first Result's store completes only once the second frame is being inferred: a pipeline
        // that waited for the store before the next inference would never get here.
        if (base.calls + 1 === 2) releaseFirst();
        return base.run(tensor);
      },
    };
    const source = new ScriptedSource('cam', ['frame', 'frame', 'frame', 'frame', 'end']);
    const {
      pipeline,
      finished,
      outbox: box,
    } = await pipelineWith(source, engine, undefined, async (result, store) => {
      timeline.push(`store ${result.seq}`);
      if (result.seq === 1) await firstStoreHeld;
      const id = await store();
      timeline.push(`stored ${result.seq}`);
      return id;
    });
    pipeline.start();
    await finished;
    await pipeline.stop();

    expect(timeline.indexOf('run 2')).toBeLessThan(timeline.indexOf('stored 1'));
    // Frame 4 waits for Result 1's store: one store outstanding and one Result behind it, at most, while
    // frames 2 and 3 are with the engine (the pipeline's memory stays bounded by a slow disk).
    expect(timeline.indexOf('run 4')).toBeGreaterThan(timeline.indexOf('stored 1'));
    expect(timeline.filter((t) => t.startsWith('stored'))).toEqual(['stored 1', 'stored 2', 'stored 3', 'stored 4']);
    const results = box.nextBatch(0, 100).map((e) => JSON.parse(String(e.payload)) as ResultPayload);
    expect(results.map((r) => r.seq)).toEqual([1, 2, 3, 4]);
  });

  /**
   * Runs `frames` frames through an engine whose runs answer only when `release` answers them: it is
   * called after each run with the runs waiting, oldest first. Once the source has no more frames every
   * run answers; a fallback answers the oldest every 2 s, so a pipeline that holds back frames still ends
   * (and fails the counts). Returns the most runs outstanding at once and the Results stored.
   */
  async function runHeldBack(frames: number, parallelism: number | undefined, release: (waiting: Array<() => void>) => void) {
    const waiting: Array<() => void> = [];
    let outstanding = 0;
    let mostOutstanding = 0;
    let ended = false;
    const base = fakeEngine();
    const answerOldest = () => waiting.shift()?.();
    const engine: Inferencer = {
      provider: base.provider,
      ...(parallelism !== undefined ? { parallelism } : {}),
      run(tensor) {
        outstanding += 1;
        mostOutstanding = Math.max(mostOutstanding, outstanding);
        const answer = base.run(tensor);
        const answered = new Promise<void>((resolve) => waiting.push(resolve)).then(() => {
          outstanding -= 1;
          return answer;
        });
        if (ended) answerOldest();
        else release(waiting);
        return answered;
      },
    };
    const source = new ScriptedSource('cam', Array(frames).fill('frame'));
    const next = source.next.bind(source);
    source.next = async () => {
      try {
        return await next();
      } catch (err) {
        if (err instanceof SourceExhaustedError) {
          ended = true;
          while (waiting.length > 0) answerOldest();
        }
        throw err;
      }
    };
    const { pipeline, finished, outbox: box } = await pipelineWith(source, engine);
    const fallback = setInterval(answerOldest, 2000);
    pipeline.start();
    await finished;
    await pipeline.stop();
    clearInterval(fallback);
    const results = box.nextBatch(0, 100).map((e) => JSON.parse(String(e.payload)) as ResultPayload);
    return { mostOutstanding, results };
  }

  it('hands the next frame to the engine while the current one is inferred, never more than two, Results in frame order', async () => {
    // Each run answers only once the next frame has been sent: a pipeline that waited for the answer
    // before sending the next frame would stall until the fallback.
    const { mostOutstanding, results } = await runHeldBack(6, undefined, (waiting) => {
      if (waiting.length > 1) waiting.shift()!();
    });
    expect(mostOutstanding).toBe(2);
    expect(results.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    // The fake engine's winner is chosen by call number: the Results are in the order the frames were sent.
    expect(results.map((r) => r.labels[0]!.label)).toEqual(['b', 'c', 'd', 'a', 'b', 'c']);
  });

  it('with two inference workers keeps three frames with the engine; Results stay in frame order when answers do not', async () => {
    // Runs answer only once three are outstanding, and then the second oldest before the oldest, as two
    // workers finishing out of order would: a pipeline that kept two frames would stall until the fallback.
    const { mostOutstanding, results } = await runHeldBack(7, 2, (waiting) => {
      if (waiting.length <= 2) return;
      waiting.splice(1, 1)[0]!();
      waiting.shift()!();
    });
    expect(mostOutstanding).toBe(3);
    expect(results.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(results.map((r) => r.labels[0]!.label)).toEqual(['b', 'c', 'd', 'a', 'b', 'c', 'd']);
  });

  it('preprocesses each frame into the array the engine handed back for the previous one', async () => {
    const sent: Float32Array[] = [];
    const base = fakeEngine();
    const engine: Inferencer = {
      provider: base.provider,
      run(tensor) {
        sent.push(tensor.data);
        return base.run(tensor);
      },
    };
    const source = new ScriptedSource('cam', ['frame', 'frame', 'frame', 'frame', 'end']);
    const { pipeline, finished, outbox: box } = await pipelineWith(source, engine);
    pipeline.start();
    await finished;
    await pipeline.stop();
    expect(sent).toHaveLength(4);
    // A frame preprocessed while the previous one is inferred needs an array of its own; after that the
    // handed-back ones go round: four frames, at most two arrays.
    expect(new Set(sent).size).toBeLessThanOrEqual(2);
    expect(box.nextBatch(0, 100)).toHaveLength(4);
  });
});

describe('SourcePipeline.whenPaused', () => {
  it('resolves once the frames with the engine have their Results and the source is stopped, not before', async () => {
    // Runs are answered by hand, so a pause can arrive while frames are with the engine.
    const held: Array<() => void> = [];
    let calls = 0;
    let onRun = () => {};
    /** Resolves once `n` runs are held. */
    const holding = (n: number) =>
      new Promise<void>((resolve) => {
        onRun = () => held.length >= n && resolve();
        onRun();
      });
    const engine: Inferencer = {
      provider: 'fake',
      run(tensor) {
        calls++;
        const answer = new Promise<InferenceOutput>((resolve) =>
          held.push(() => resolve({ scores: new Float32Array([0.1, 0.7, 0.1, 0.1]), inferenceMs: 1, input: tensor.data })),
        );
        onRun();
        return answer;
      },
    };
    const source = new ScriptedSource('cam', Array<'frame'>(100).fill('frame'));
    // Stopping is only recorded, so the scripted frames go on after a resume, as a camera's would.
    let sourceStopped = false;
    source.stop = async () => {
      sourceStopped = true;
    };
    const { pipeline, outbox: box } = await pipelineWith(source, engine);
    expect(await pipeline.whenPaused()).toBeUndefined(); // not paused: at once
    pipeline.start();
    await holding(2);
    pipeline.setPaused(true);
    let settled = false;
    const paused = pipeline.whenPaused().then(() => (settled = true));
    // Two frames are with the engine: the pause has not taken hold while they are unanswered.
    await new Promise((r) => setImmediate(r));
    expect(settled).toBe(false);
    held.shift()!();
    await new Promise((r) => setImmediate(r));
    expect(settled).toBe(false);
    held.shift()!();
    await paused;
    expect(sourceStopped).toBe(true);
    expect(box.nextBatch(0, 100)).toHaveLength(2);
    const callsAtPause = calls;
    expect(held).toHaveLength(0);
    // Resumed, frames flow again; a second whenPaused with no pause resolves at once.
    pipeline.setPaused(false);
    await pipeline.whenPaused();
    await holding(1);
    expect(calls).toBeGreaterThan(callsAtPause);
    // A stop while a pause waits for its frame also ends the wait.
    pipeline.setPaused(true);
    const waiting = pipeline.whenPaused();
    const stopped = pipeline.stop(50);
    await waiting;
    for (const release of held.splice(0)) release();
    await stopped;
  });
});
