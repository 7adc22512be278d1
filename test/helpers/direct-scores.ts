// Kept apart from tiny-model.ts, which many tests import (through tools.ts) without needing ONNX Runtime.
import * as ort from 'onnxruntime-node';

/** A model's scores from an ordinary main-thread session (one thread): the reference engines are checked against. */
export async function directScores(file: string, input: Float32Array, dims: number[]): Promise<number[]> {
  const session = await ort.InferenceSession.create(file, { intraOpNumThreads: 1, graphOptimizationLevel: 'all' });
  try {
    const out = await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', input.slice(), dims) });
    return Array.from(out[session.outputNames[0]!]!.data as Float32Array);
  } finally {
    await session.release();
  }
}
