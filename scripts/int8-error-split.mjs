#!/usr/bin/env node
// Where a QDQ model's end-to-end error comes from: its weights or its activations. Run by hand, never
// by the tests or CI (needs `npm run build`):
//   node scripts/int8-error-split.mjs FLOAT.onnx QDQ.onnx IMAGES_DIR [--max N]
// Compares on the logits (the Softmax input; else the first output), against the float model, on the
// images of IMAGES_DIR (preprocessed as FLOAT's manifest says):
//   - "full": the QDQ model as written;
//   - "weightsOnly": the same model with every activation's QuantizeLinear → DequantizeLinear pair
//     replaced by what it clamps to at zero (a Relu where the zero point is the type's lowest value,
//     i.e. a folded Relu; else nothing), so activations keep full precision and the weights stay INT8.
//     A folded Clip's upper bound is not restored.
// If "weightsOnly" is already below a target, no choice of activation precision (float islands,
// 16-bit) reaches it: the weights' rounding has to improve too. Prints one JSON line.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { findManifestForModel } from '../dist/model/manifest.js';
import { DataType, loadModel } from '../dist/model/onnx.js';
import { createSession, withExtraOutputs } from '../dist/model/quantize/calibrate.js';
import { endToEndTensor } from '../dist/model/quantize/held-out.js';
import { defaultTimingOptions, withoutActivationRounding } from '../dist/model/quantize/mixed-precision.js';
import { SqnrAccumulator } from '../dist/model/quantize/numeric.js';
import { listImageFiles } from '../dist/util/index.js';
import { createPreprocessor } from '../dist/vision/index.js';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { max: { type: 'string' } } });
const [floatPath, qdqPath, imagesDir] = positionals;
if (!floatPath || !qdqPath || !imagesDir) {
  console.error('usage: node scripts/int8-error-split.mjs FLOAT.onnx QDQ.onnx IMAGES_DIR [--max N]');
  process.exit(2);
}
const LOWEST = { [DataType.UINT8]: 0, [DataType.INT8]: -128, [DataType.UINT16]: 0, [DataType.INT16]: -32768 };

/** A scalar zero point's value (raw little-endian bytes, or int32_data as ONNX stores small integer types). */
function zeroPointOf(t) {
  const raw = t.rawData?.length ? Buffer.from(t.rawData) : undefined;
  if (!raw) return Number(t.int32Data?.[0] ?? 0);
  const read = {
    [DataType.UINT8]: 'readUInt8',
    [DataType.INT8]: 'readInt8',
    [DataType.UINT16]: 'readUInt16LE',
    [DataType.INT16]: 'readInt16LE',
  };
  return raw[read[t.dataType] ?? 'readInt32LE'](0);
}

/**
 * The folded clamps of a written QDQ model, which has no plan to ask: an activation whose zero point is
 * its type's lowest value was a Relu's output (clamped at 0; a Clip's upper bound is not recovered).
 */
function foldedRelus(model) {
  const inits = new Map(model.graph.initializer.map((t) => [t.name, t]));
  const clamps = new Map();
  for (const q of model.graph.node) {
    if (q.opType !== 'QuantizeLinear') continue;
    const zp = inits.get(q.input[2]);
    if (zp !== undefined && zeroPointOf(zp) === LOWEST[zp.dataType]) clamps.set(q.input[0], Number.POSITIVE_INFINITY);
  }
  return clamps;
}

const float = await loadModel(floatPath);
const floatTensor = endToEndTensor(float);
const qdq = await loadModel(qdqPath);
const qdqTensor = endToEndTensor(qdq);
const stripped = withoutActivationRounding(qdq, foldedRelus(qdq));
const dequantizers = (m) => m.graph.node.filter((n) => n.opType === 'DequantizeLinear').length;
const found = await findManifestForModel(floatPath);
if (!found) throw new Error(`no manifest beside ${floatPath}: cannot preprocess the images`);
const preprocess = createPreprocessor(found.manifest.input);
const files = (await listImageFiles(imagesDir, 'image folder')).slice(0, values.max ? Number(values.max) : undefined);

const fused = defaultTimingOptions();
const floatSession = await createSession(withExtraOutputs(float, [floatTensor]));
const variants = {
  full: { session: await createSession(withExtraOutputs(qdq, [qdqTensor]), fused), sqnr: new SqnrAccumulator(), agree: 0 },
  weightsOnly: {
    session: await createSession(withExtraOutputs(stripped, [qdqTensor]), fused),
    sqnr: new SqnrAccumulator(),
    agree: 0,
  },
};
const argmax = (v) => v.reduce((best, x, i) => (x > v[best] ? i : best), 0);
for (const file of files) {
  const { tensor } = await preprocess(await readFile(file));
  const input = new ort.Tensor('float32', tensor.data, tensor.dims);
  const ref = (await floatSession.run({ [floatSession.inputNames[0]]: input }, [floatTensor]))[floatTensor].data;
  for (const v of Object.values(variants)) {
    const out = (await v.session.run({ [v.session.inputNames[0]]: input }, [qdqTensor]))[qdqTensor].data;
    v.sqnr.add(ref, out);
    if (argmax(ref) === argmax(out)) v.agree++;
  }
}
const figure = (v) => ({ sqnrDb: Math.round(v.sqnr.db * 100) / 100, top1Agreement: `${v.agree}/${files.length}` });
console.log(
  JSON.stringify({
    model: path.basename(qdqPath),
    tensor: qdqTensor,
    images: files.length,
    activationPairsRemoved: dequantizers(qdq) - dequantizers(stripped),
    full: figure(variants.full),
    weightsOnly: figure(variants.weightsOnly),
  }),
);
