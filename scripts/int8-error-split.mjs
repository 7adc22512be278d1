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

/** The QDQ model with its activation Q/DQ pairs removed (weights are DequantizeLinear of an initializer, no Q). */
function withoutActivationRounding(model) {
  const g = model.graph;
  const inits = new Map(g.initializer.map((t) => [t.name, t]));
  const producers = new Map(g.node.flatMap((n) => n.output.map((o) => [o, n])));
  let pairs = 0;
  for (const dq of g.node) {
    if (dq.opType !== 'DequantizeLinear') continue;
    const q = producers.get(dq.input[0]);
    if (q?.opType !== 'QuantizeLinear') continue;
    const zp = inits.get(q.input[2]);
    const clampsAtZero = zp !== undefined && zeroPointOf(zp) === LOWEST[zp.dataType];
    // The DQ node keeps its output name, so consumers and graph outputs need no renaming.
    dq.opType = clampsAtZero ? 'Relu' : 'Identity';
    dq.domain = '';
    dq.attribute = [];
    dq.input = [q.input[0]];
    pairs++;
  }
  // The QuantizeLinear nodes now feed nothing: ORT drops them.
  return { model, pairs };
}

const float = await loadModel(floatPath);
const floatTensor = endToEndTensor(float);
const qdq = await loadModel(qdqPath);
const qdqTensor = endToEndTensor(qdq);
const stripped = withoutActivationRounding(await loadModel(qdqPath));
const found = await findManifestForModel(floatPath);
if (!found) throw new Error(`no manifest beside ${floatPath}: cannot preprocess the images`);
const preprocess = createPreprocessor(found.manifest.input);
const files = (await listImageFiles(imagesDir, 'image folder')).slice(0, values.max ? Number(values.max) : undefined);

const fused = { graphOptimizationLevel: 'all', intraOpNumThreads: 2, extra: { session: { intra_op: { allow_spinning: '0' } } } };
const floatSession = await createSession(withExtraOutputs(float, [floatTensor]));
const variants = {
  full: { session: await createSession(withExtraOutputs(qdq, [qdqTensor]), fused), sqnr: new SqnrAccumulator(), agree: 0 },
  weightsOnly: {
    session: await createSession(withExtraOutputs(stripped.model, [qdqTensor]), fused),
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
    activationPairsRemoved: stripped.pairs,
    full: figure(variants.full),
    weightsOnly: figure(variants.weightsOnly),
  }),
);
