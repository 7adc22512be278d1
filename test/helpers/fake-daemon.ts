/**
 * Fakes for running the Daemon in-process: a prepared model, an endless camera and an engine. The
 * preprocessing, outbox, publisher, features and broker stay real.
 */
import { SourceStoppedError, type Frame, type FrameSource } from '../../src/capture/index.js';
import type { DaemonEngine } from '../../src/daemon/index.js';
import type { PreparedModel } from '../../src/daemon/model-setup.js';
import type { InputTensor } from '../../src/inference/index.js';

export const fakeModel: PreparedModel = {
  modelPath: '/fake.onnx',
  manifestPath: '/fake.onnx.json',
  manifest: {
    name: 'fake',
    file: 'fake.onnx',
    input: { name: 'x', layout: 'NCHW', width: 8, height: 8, channels: 'RGB', scale: 1, mean: [0, 0, 0], std: [1, 1, 1], resize: 'fill' },
    output: { name: 'y', activation: 'softmax' },
  },
  labels: ['a', 'b', 'c', 'd', 'e'],
  precision: 'int8',
  synthetic: false,
};

/** An endless camera: a frame every call (the `frame` function picks its bytes), paced by capture.intervalMs. */
export function fakeCamera(id: string, frame: (n: number) => Buffer): FrameSource & { starts: number } {
  let n = 0;
  let stopped = false;
  const source = {
    id,
    backend: 'files' as const,
    starts: 0,
    async start() {
      stopped = false;
      source.starts++;
    },
    async stop() {
      stopped = true;
    },
    stats: () => ({ captured: n, failed: 0, dropped: 0 }),
    async next(): Promise<Frame> {
      if (stopped) throw new SourceStoppedError(id);
      n += 1;
      return { sourceId: id, captureSeq: n, capturedAt: new Date(), data: frame(n) };
    },
  };
  return source;
}

/** Label b for every frame. */
const FIXED_SCORES = new Float32Array([0.1, 0.6, 0.1, 0.1, 0.1]);

/**
 * An engine that answers at once (`scores` from the input tensor, default label b), or (`hang`) never.
 * `runs` counts the inferences.
 */
export function fakeEngine(opts: { hang?: () => boolean; scores?: (tensor: InputTensor) => Float32Array } = {}): DaemonEngine & {
  runs: number;
} {
  const pending = new Set<number>();
  const engine = {
    provider: 'fake',
    runs: 0,
    info: {
      provider: 'fake',
      attempts: [],
      input: { name: 'x', type: 'float32', dims: [1, 3, 8, 8] },
      output: { name: 'y', type: 'float32', dims: [1, 5] },
      fromCache: false,
      loadMs: 0,
      warmupMs: 0,
      runtime: { spec: '', path: '', version: 'fake', providers: ['cpu'] },
    },
    attempts: [],
    get oldestPendingMs() {
      const first = [...pending][0];
      return first === undefined ? 0 : performance.now() - first;
    },
    run(tensor: InputTensor) {
      if (opts.hang?.()) {
        pending.add(performance.now());
        return new Promise<never>(() => undefined);
      }
      engine.runs++;
      return Promise.resolve({ scores: opts.scores?.(tensor) ?? FIXED_SCORES, inferenceMs: 1 });
    },
    async close() {},
  };
  return engine as DaemonEngine & { runs: number };
}
