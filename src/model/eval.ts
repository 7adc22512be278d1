/**
 * Compares a candidate model (e.g. the INT8 one) with a reference on the same images: how often
 * they agree on the top class, how close the outputs are (SQNR), and how fast each runs with the
 * daemon's session options (passed in by the caller), measured interleaved in one run so machine
 * noise hits both alike.
 */
import { readFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import cliProgress from 'cli-progress';
import type { Logger } from 'pino';
import * as ort from 'onnxruntime-node';
import { findManifestForModel } from './manifest.js';
import { SqnrAccumulator } from './quantize/numeric.js';
import { createPreprocessor } from '../vision/index.js';

export interface EvalOptions {
  ref: string;
  cand: string;
  images: string[];
  /** default: the reference model's manifest input spec */
  preprocess?: (image: Buffer) => Promise<Float32Array>;
  /** timed passes over the images (default 3); outputs are compared on the first */
  repeats?: number;
  /**
   * Session options for both models. Required: latency only means something with the options the
   * daemon runs with, and those are built from the config by inference/ (sessionOptionsFor), which
   * model/ does not import — the caller passes them in.
   */
  sessionOptions: ort.InferenceSession.SessionOptions;
  logger?: Logger;
  progress?: boolean;
}

export interface EvalReport {
  images: number;
  /** fraction 0..1 of images whose top-1 class is the same */
  top1Agreement: number;
  /** fraction 0..1 of images whose reference top-1 class is among the candidate's top 5 */
  top5Agreement: number;
  /** 10·log10(Σref² / Σ(ref−cand)²) over the first output of all images; Infinity when identical */
  sqnrDb: number;
  /** median ms per session.run */
  refMs: number;
  candMs: number;
  /** candMs / refMs */
  latencyRatio: number;
}

function topK(scores: ArrayLike<number>, k: number): number[] {
  const best: number[] = [];
  for (let i = 0; i < scores.length; i++) {
    const v = scores[i]!;
    if (Number.isNaN(v)) continue;
    let pos = best.length;
    while (pos > 0 && scores[best[pos - 1]!]! < v) pos--;
    if (pos < k) {
      best.splice(pos, 0, i);
      if (best.length > k) best.pop();
    }
  }
  return best;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function openSession(file: string, options: ort.InferenceSession.SessionOptions): Promise<ort.InferenceSession> {
  try {
    return await ort.InferenceSession.create(file, options);
  } catch (err) {
    throw new Error(`cannot load model ${file}: ${(err as Error).message}`);
  }
}

export async function evaluateModels(opts: EvalOptions): Promise<EvalReport> {
  const repeats = opts.repeats ?? 3;
  if (!Number.isInteger(repeats) || repeats < 1) throw new Error(`repeats must be an integer ≥ 1, got ${repeats}`);
  if (opts.images.length === 0) throw new Error('no images to evaluate on');
  let preprocess = opts.preprocess;
  if (!preprocess) {
    const found = await findManifestForModel(opts.ref);
    if (!found) throw new Error(`no manifest for ${opts.ref}: cannot preprocess images (pass a preprocess function)`);
    const pre = createPreprocessor(found.manifest.input);
    preprocess = async (buf) => (await pre(buf)).tensor.data;
  }

  const sessionOptions = opts.sessionOptions;
  const ref = await openSession(opts.ref, sessionOptions);
  let cand: ort.InferenceSession | undefined;
  try {
    cand = await openSession(opts.cand, sessionOptions);
    const refIn = ref.inputNames[0]!;
    const candIn = cand.inputNames[0]!;
    const refMeta = ref.inputMetadata[0];
    const dims = refMeta?.isTensor ? refMeta.shape.map((d) => (typeof d === 'number' && d > 0 ? d : 1)) : undefined;
    if (!dims) throw new Error(`${opts.ref}: first input is not a tensor`);

    // Inputs are preprocessed once, up front, so timing covers session.run only.
    const tensors: ort.Tensor[] = [];
    for (const image of opts.images) {
      let data: Float32Array;
      try {
        data = await preprocess(await readFile(image));
      } catch (err) {
        throw new Error(`cannot use image ${image}: ${(err as Error).message}`);
      }
      tensors.push(new ort.Tensor('float32', data, dims));
    }

    const bar =
      opts.progress && process.stderr.isTTY
        ? new cliProgress.SingleBar(
            { format: 'evaluating [{bar}] {value}/{total} runs', stream: process.stderr },
            cliProgress.Presets.shades_classic,
          )
        : undefined;
    bar?.start(tensors.length * repeats, 0);
    // Warm-up: the first run allocates and prepacks.
    await ref.run({ [refIn]: tensors[0]! });
    await cand.run({ [candIn]: tensors[0]! });

    const sqnr = new SqnrAccumulator();
    let top1 = 0;
    let top5 = 0;
    const refTimes: number[] = [];
    const candTimes: number[] = [];
    for (let r = 0; r < repeats; r++) {
      for (let i = 0; i < tensors.length; i++) {
        // Alternate which model goes first so neither always runs on a cache warmed by the other.
        const order = (r + i) % 2 === 0 ? (['ref', 'cand'] as const) : (['cand', 'ref'] as const);
        const outs: Partial<Record<'ref' | 'cand', Float32Array>> = {};
        for (const which of order) {
          const s = which === 'ref' ? ref : cand;
          const t0 = performance.now();
          const out = await s.run({ [which === 'ref' ? refIn : candIn]: tensors[i]! });
          (which === 'ref' ? refTimes : candTimes).push(performance.now() - t0);
          outs[which] = out[s.outputNames[0]!]!.data as Float32Array;
        }
        if (r === 0) {
          const a = outs.ref!;
          const b = outs.cand!;
          if (a.length !== b.length) {
            throw new Error(`outputs differ in size: ${opts.ref} gives ${a.length} values, ${opts.cand} ${b.length}`);
          }
          sqnr.add(a, b);
          const refTop = topK(a, 1)[0];
          const candTop = topK(b, 5);
          if (candTop[0] === refTop) top1++;
          if (refTop !== undefined && candTop.includes(refTop)) top5++;
        }
        bar?.increment();
      }
    }
    bar?.stop();
    const refMs = median(refTimes);
    const candMs = median(candTimes);
    const report: EvalReport = {
      images: tensors.length,
      top1Agreement: top1 / tensors.length,
      top5Agreement: top5 / tensors.length,
      sqnrDb: sqnr.db,
      refMs,
      candMs,
      latencyRatio: candMs / refMs,
    };
    opts.logger?.info(report, 'models evaluated');
    return report;
  } finally {
    await ref.release();
    await cand?.release();
  }
}
