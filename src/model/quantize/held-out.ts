/**
 * The end-to-end figure of a quantization: the quantized model against the float one on inputs it
 * was not calibrated on — SQNR of the logits (the Softmax input when the model ends in Softmax: a
 * probability SQNR hides errors in the classes near zero) and how often the top-1 class agrees.
 */
import * as ort from 'onnxruntime-node';
import type { onnx } from '../onnx.js';
import { collectGarbage, producerMap } from './graph.js';
import { SqnrAccumulator } from './numeric.js';

export interface HeldOutReport {
  /** held-out inputs compared (none of them calibrated on) */
  images: number;
  /** the tensor compared: the logits (Softmax input) or the first graph output */
  tensor: string;
  /** 10·log10(Σref² / Σ(ref−int8)²) over all held-out inputs; null when identical */
  sqnrDb: number | null;
  /** fraction 0..1 of held-out inputs whose top-1 class is the same */
  top1Agreement: number;
}

/** The tensor the end-to-end figure compares: the first output, or its Softmax's input. */
export function endToEndTensor(model: onnx.IModelProto): string {
  const g = model.graph ?? {};
  const out = g.output?.[0]?.name;
  if (!out) throw new Error('model has no output');
  const p = producerMap(g).get(out);
  if (p?.opType === 'Softmax' && (!p.domain || p.domain === 'ai.onnx') && p.input?.[0]) return p.input[0];
  return out;
}

function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i]! > v[best]!) best = i;
  return best;
}

/** A session runnable with one input and a list of fetches (ORT's, or the calibration session). */
export type FetchSession = Pick<ort.InferenceSession, 'run'>;

/**
 * Runs both sessions on each input (one at a time, no input kept) and compares `floatTensor` of the
 * float session with `quantTensor` of the quantized one. Returns undefined when there are no inputs.
 * The float side may instead be the outputs `record` collected on an earlier call, in input order:
 * a second quantized model is then compared on the same inputs without the float session.
 */
export async function compareHeldOut(
  float: FetchSession | readonly Float32Array[],
  quantSession: FetchSession,
  tensors: { float: string; quant: string },
  inputs: AsyncIterable<Float32Array>,
  inputName: string,
  inputDims: number[],
  record?: Float32Array[],
): Promise<HeldOutReport | undefined> {
  const sqnr = new SqnrAccumulator();
  let images = 0;
  let agree = 0;
  for await (const data of inputs) {
    const feed = { [inputName]: new ort.Tensor('float32', data, inputDims) };
    let fv: Float32Array;
    if (Array.isArray(float)) {
      const recorded = float[images];
      if (!recorded) throw new Error(`internal: ${float.length} recorded float output(s) for more held-out inputs`);
      fv = recorded;
    } else {
      const f = (await (float as FetchSession).run(feed, [tensors.float]))[tensors.float]!;
      fv = (f.data as Float32Array).slice();
      f.dispose?.();
    }
    record?.push(fv);
    const q = (await quantSession.run(feed, [tensors.quant]))[tensors.quant]!;
    const qv = q.data as Float32Array;
    sqnr.add(fv, qv);
    if (argmax(fv) === argmax(qv)) agree++;
    images++;
    q.dispose?.();
    collectGarbage();
  }
  if (images === 0) return undefined;
  const db = sqnr.db;
  return { images, tensor: tensors.float, sqnrDb: Number.isFinite(db) ? db : null, top1Agreement: agree / images };
}
