#!/usr/bin/env node
// Evidence for the INT8 quantizer on a TRAINED Inception network and on real photographs, with only
// the registries this project may reach (npm and Debian); run by hand, never by the tests or CI.
//
//   1. model: the npm package nsfwjs@4.4.0 ships a Keras InceptionV3 (the ImageNet-trained Keras
//      backbone, frozen, plus a trained 5-class head; 299×299 RGB, x/255) as tfjs layers JSON with
//      uint8-packed weights. This script converts it to ONNX (opset 13, NHWC input + Transpose,
//      Conv + BatchNormalization + Relu, MaxPool, AveragePool, Concat, Flatten, Gemm, Dropout,
//      Softmax): a plain CNN as a user would bring it, for `model quantize` to prepare;
//   2. photographs: Debian's tuxpaint-stamps-default (hundreds of photographs of animals, food,
//      plants, vehicles, buildings, … on a cut-out background) plus the sample photos of
//      python3-skimage, python3-sklearn and python-matplotlib-data, fetched with `apt-get download`
//      and flattened to JPEG; a fixed, sorted split into calibration and evaluation images;
//   3. optional check of the conversion (--check N): the same Keras model run by @tensorflow/tfjs
//      (pure JavaScript, installed into tmp/ by this script) on N photos must give the ONNX model's
//      probabilities;
//   B. a second model: the frozen backbone + a softmax head trained here on 12 stamp categories
//      (a harder test: a weak classifier with many near-ties), outputs probabilities then logits;
//   4. for each model and calibration method: `inceptiond model quantize` then `inceptiond model eval` (the
//      CLI a user runs), with the JSON lines printed and collected in tmp/trained-inception/results.json.
//
// Usage (after npm run build):  node scripts/trained-inception.mjs [--check 4] [--cal 64] [--eval 300]
//                                 [--methods percentile,minmax,entropy] [--repeats 2]
//                                 [--variants "percentile;percentile --bias-correction;mse"]
// --variants lists `model quantize` argument sets (method first), separated by ";": each is quantized
// and evaluated like a method; it replaces --methods when given.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { asFloat, DataType, makeModel, makeNode, makeTensor, makeValueInfo, onnx, saveModel } from '../dist/model/onnx.js';
import { writeManifestBeside } from '../dist/model/manifest.js';
import { SqnrAccumulator } from '../dist/model/quantize/numeric.js';
import { createPreprocessor } from '../dist/vision/index.js';

const { values } = parseArgs({
  options: {
    check: { type: 'string', default: '0' },
    cal: { type: 'string', default: '64' },
    eval: { type: 'string', default: '300' },
    methods: { type: 'string', default: 'percentile,minmax,entropy' },
    variants: { type: 'string' },
    repeats: { type: 'string', default: '2' },
  },
});
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const work = path.join(root, 'tmp', 'trained-inception');
mkdirSync(work, { recursive: true });
const log = (msg) => console.log(`[${(process.uptime()).toFixed(0)}s] ${msg}`);
const sh = (cmd, args, cwd) => execFileSync(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'inherit'] }).toString();

// ---------------------------------------------------------------------------------------------
// 1. The trained Keras InceptionV3 → ONNX

const NSFWJS = 'nsfwjs@4.4.0';
const pkgDir = path.join(work, 'nsfwjs', 'package');
if (!existsSync(pkgDir)) {
  mkdirSync(path.dirname(pkgDir), { recursive: true });
  const tgz = sh('npm', ['pack', NSFWJS, '--silent'], path.dirname(pkgDir)).trim().split('\n').pop();
  sh('tar', ['xzf', tgz], path.dirname(pkgDir));
}
const modelDir = path.join(pkgDir, 'dist', 'models', 'inception_v3');
const require = createRequire(import.meta.url);
const { modelTopology, weightsManifest } = require(path.join(modelDir, 'model.min.js'));
const CLASSES = ['Drawing', 'Hentai', 'Neutral', 'Porn', 'Sexy']; // nsfwjs's NSFW_CLASSES, in output order

/** tfjs weight groups: base64 shards; uint8 values dequantized as q * scale + min. Decoded once. */
let decoded;
function loadWeights() {
  if (decoded) return decoded;
  const weights = new Map();
  const groups = [];
  for (const group of weightsManifest) {
    const bytes = Buffer.concat(group.paths.map((p) => Buffer.from(require(path.join(modelDir, `${p}.min.js`)), 'base64')));
    groups.push(bytes);
    let off = 0;
    for (const spec of group.weights) {
      const n = spec.shape.reduce((a, b) => a * b, 1);
      const q = spec.quantization;
      const v = new Float32Array(n);
      if (q?.dtype === 'uint8') {
        for (let i = 0; i < n; i++) v[i] = bytes[off + i] * q.scale + q.min;
        off += n;
      } else if (!q && spec.dtype === 'float32') {
        v.set(new Float32Array(bytes.buffer.slice(bytes.byteOffset + off, bytes.byteOffset + off + 4 * n)));
        off += 4 * n;
      } else throw new Error(`weight ${spec.name}: unsupported encoding ${JSON.stringify(q ?? spec.dtype)}`);
      weights.set(spec.name, { shape: spec.shape, v });
    }
  }
  decoded = { weights, weightData: Buffer.concat(groups) };
  return decoded;
}

/** Keras [kh, kw, in, out] → ONNX [out, in, kh, kw]. */
function convKernel(w) {
  const [kh, kw, ci, co] = w.shape;
  const out = new Float32Array(w.v.length);
  for (let y = 0; y < kh; y++)
    for (let x = 0; x < kw; x++)
      for (let i = 0; i < ci; i++)
        for (let o = 0; o < co; o++) out[((o * ci + i) * kh + y) * kw + x] = w.v[((y * kw + x) * ci + i) * co + o];
  return { dims: [co, ci, kh, kw], v: out };
}

/** Keras "same" with stride 1 and odd kernels is symmetric; other "same" cases use ONNX's SAME_UPPER (TF's rule). */
function padAttrs(padding, kernel, strides) {
  if (padding === 'valid') return {};
  if (padding !== 'same') throw new Error(`padding ${padding}`);
  if (strides.every((s) => s === 1) && kernel.every((k) => k % 2 === 1)) {
    const [ph, pw] = kernel.map((k) => (k - 1) / 2);
    return { pads: [ph, pw, ph, pw] };
  }
  return { auto_pad: 'SAME_UPPER' };
}

/**
 * The Keras graph as ONNX. `head` chooses the top: 'nsfwjs' (the shipped 5-class head, output
 * `probabilities`), 'features' (the 2048 pooled ImageNet features, output `features`), or a linear
 * head { weight [2048 × K], bias [K] } (outputs `probabilities`, then `logits`).
 */
function convert(head = 'nsfwjs') {
  const { weights } = loadWeights();
  const W = (name) => {
    const w = weights.get(name);
    if (!w) throw new Error(`missing weight ${name}`);
    return w;
  };
  const F = DataType.FLOAT;
  const nodes = [];
  const inits = [];
  const init = (name, dims, v) => {
    inits.push(makeTensor(name, F, dims, v));
    return name;
  };
  const cfg = modelTopology.model_config.config;
  const tensorOf = new Map(); // Keras layer name → ONNX tensor name (NCHW unless noted)
  const inputLayer = cfg.input_layers[0][0];
  const outputLayer = cfg.output_layers[0][0];
  const activation = (act, x, name) => {
    if (act === 'linear') return x;
    if (act === 'relu') {
      nodes.push(makeNode('Relu', [x], [`${name}/relu`]));
      return `${name}/relu`;
    }
    if (act === 'softmax') {
      nodes.push(makeNode('Softmax', [x], [`${name}/softmax`], { axis: 1 }));
      return `${name}/softmax`;
    }
    throw new Error(`activation ${act}`);
  };
  const cut = head === 'nsfwjs' ? undefined : 'flatten_1'; // the pooled features; the nsfwjs head follows
  for (const layer of cfg.layers) {
    if (cut && tensorOf.has(cut)) break;
    const c = layer.config;
    const ins = (layer.inbound_nodes[0] ?? []).map(([n]) => tensorOf.get(n));
    const x = ins[0];
    const name = layer.name;
    let y;
    switch (layer.class_name) {
      case 'InputLayer':
        nodes.push(makeNode('Transpose', [name], [`${name}/nchw`], { perm: [0, 3, 1, 2] }));
        y = `${name}/nchw`;
        break;
      case 'Conv2D': {
        if (c.data_format !== 'channels_last' || c.dilation_rate.some((d) => d !== 1)) throw new Error(`${name}: unsupported`);
        const k = convKernel(W(`${name}/kernel`));
        const inputs = [x, init(`${name}/kernel`, k.dims, k.v)];
        if (c.use_bias) inputs.push(init(`${name}/bias`, [k.dims[0]], W(`${name}/bias`).v));
        nodes.push(
          makeNode('Conv', inputs, [name], {
            kernel_shape: c.kernel_size,
            strides: c.strides,
            ...padAttrs(c.padding, c.kernel_size, c.strides),
          }),
        );
        y = activation(c.activation, name, name);
        break;
      }
      case 'BatchNormalization': {
        const mean = W(`${name}/moving_mean`).v;
        const n = mean.length;
        const gamma = c.scale ? W(`${name}/gamma`).v : new Float32Array(n).fill(1);
        const beta = c.center ? W(`${name}/beta`).v : new Float32Array(n);
        nodes.push(
          makeNode(
            'BatchNormalization',
            [
              x,
              init(`${name}/gamma`, [n], gamma),
              init(`${name}/beta`, [n], beta),
              init(`${name}/moving_mean`, [n], mean),
              init(`${name}/moving_variance`, [n], W(`${name}/moving_variance`).v),
            ],
            [name],
            { epsilon: asFloat(c.epsilon) },
          ),
        );
        y = name;
        break;
      }
      case 'Activation':
        y = activation(c.activation, x, name);
        break;
      case 'MaxPooling2D':
      case 'AveragePooling2D': {
        const avg = layer.class_name === 'AveragePooling2D';
        // TF's average pooling divides by the number of real (not padded) pixels: count_include_pad 0.
        nodes.push(
          makeNode(avg ? 'AveragePool' : 'MaxPool', [x], [name], {
            kernel_shape: c.pool_size,
            strides: c.strides,
            ...padAttrs(c.padding, c.pool_size, c.strides),
            ...(avg ? { count_include_pad: 0 } : {}),
          }),
        );
        y = name;
        break;
      }
      case 'Concatenate':
        if (c.axis !== 3 && c.axis !== -1) throw new Error(`${name}: concat axis ${c.axis}`);
        nodes.push(makeNode('Concat', ins, [name], { axis: 1 }));
        y = name;
        break;
      case 'Flatten':
        // Keras flattens NHWC: back to channels-last first, so Dense weights keep their order.
        nodes.push(makeNode('Transpose', [x], [`${name}/nhwc`], { perm: [0, 2, 3, 1] }));
        nodes.push(makeNode('Flatten', [`${name}/nhwc`], [name], { axis: 1 }));
        y = name;
        break;
      case 'Dense': {
        const k = W(`${name}/kernel`);
        const inputs = [x, init(`${name}/kernel`, k.shape, k.v)];
        if (c.use_bias) inputs.push(init(`${name}/bias`, [c.units], W(`${name}/bias`).v));
        nodes.push(makeNode('Gemm', inputs, [name]));
        y = activation(c.activation, name, name);
        break;
      }
      case 'Dropout':
        nodes.push(makeNode('Dropout', [x], [name]));
        y = name;
        break;
      default:
        throw new Error(`layer ${name}: ${layer.class_name} is not converted`);
    }
    tensorOf.set(name, y);
  }
  const [, h, w, ch] = cfg.layers.find((l) => l.name === inputLayer).config.batch_input_shape;
  let outputs;
  if (head === 'nsfwjs') {
    // The last Dense's softmax output is the graph output, named for what it is.
    const last = nodes.at(-1);
    if (last.opType !== 'Softmax' || last.output[0] !== tensorOf.get(outputLayer))
      throw new Error('expected the model to end in a softmax');
    last.output[0] = 'probabilities';
    outputs = [makeValueInfo('probabilities', F, [1, CLASSES.length])];
  } else if (head === 'features') {
    nodes.push(makeNode('Identity', [tensorOf.get(cut)], ['features']));
    outputs = [makeValueInfo('features', F, [1, 2048])];
  } else {
    const k = head.bias.length;
    nodes.push(
      makeNode('Gemm', [tensorOf.get(cut), init('head/kernel', [2048, k], head.weight), init('head/bias', [k], head.bias)], ['logits']),
    );
    nodes.push(makeNode('Softmax', ['logits'], ['probabilities'], { axis: 1 }));
    // Probabilities first, like the zoo's classifiers (model eval compares the first output).
    outputs = [makeValueInfo('probabilities', F, [1, k]), makeValueInfo('logits', F, [1, k])];
  }
  const graph = onnx.GraphProto.create({
    name: 'keras-inception-v3',
    node: nodes,
    initializer: inits,
    input: [makeValueInfo(inputLayer, F, [1, h, w, ch])],
    output: outputs,
  });
  return {
    model: makeModel({ graph, opset: 13, irVersion: 7, producer: 'inceptiond scripts/trained-inception.mjs' }),
    size: h,
    inputName: inputLayer,
  };
}

const SIZE = 299;
const INPUT_SPEC = {
  layout: 'NHWC',
  width: SIZE,
  height: SIZE,
  channels: 'RGB',
  scale: 1 / 255,
  mean: [0, 0, 0],
  std: [1, 1, 1],
  resize: 'fill',
};

/** Writes the converted model, its labels and its manifest (nsfwjs normalizes x/255 and stretches to 299×299). */
async function writeModel(file, head, labels, outputName) {
  const { model, size, inputName } = convert(head);
  if (size !== SIZE) throw new Error(`expected a ${SIZE}×${SIZE} input, got ${size}`);
  await saveModel(model, file);
  if (!labels) return file;
  const labelFile = file.replace(/\.onnx$/, '.labels.txt');
  writeFileSync(labelFile, `${labels.join('\n')}\n`);
  await writeManifestBeside(file, {
    name: path.basename(file, '.onnx'),
    file: path.basename(file),
    input: { name: inputName, ...INPUT_SPEC },
    output: { name: outputName, activation: 'none' },
    labels: path.basename(labelFile),
    precision: 'fp32',
    notes: `Keras InceptionV3 of ${NSFWJS} (tfjs layers format), converted by scripts/trained-inception.mjs`,
  });
  log(`wrote ${path.relative(root, file)} (${(statSync(file).size / 1e6).toFixed(1)} MB)`);
  return file;
}

const nsfwModel = path.join(work, 'inception-v3-nsfwjs.onnx');
if (!existsSync(nsfwModel)) await writeModel(nsfwModel, 'nsfwjs', CLASSES, 'probabilities');

// ---------------------------------------------------------------------------------------------
// 2. Photographs from Debian packages

const PHOTO_PACKAGES = ['tuxpaint-stamps-default', 'python3-skimage', 'python3-sklearn', 'python-matplotlib-data'];
// Stamp folders of drawings, symbols and signs, not photographs.
const NOT_PHOTOS = /\/stamps\/(symbols|town\/(cartoon|roadsigns|flags))\//;
const SAMPLE_PHOTOS =
  /\/(skimage\/data\/(astronaut|coffee|chelsea|rocket|motorcycle_left|motorcycle_right|hubble_deep_field)|sklearn\/datasets\/images\/(china|flower)|sample_data\/(grace_hopper|Minduka_Present_Blue_Pack|logo2))\.(png|jpg)$/;
const debDir = path.join(work, 'debs');
const photoDir = path.join(work, 'photos');
/** "animals_mammals" for a stamp in stamps/animals/mammals/…, "misc" for the rest. */
const categoryOf = (f) => /\/stamps\/([^/]+)\/([^/]+)\//.exec(f)?.slice(1).join('_') ?? 'misc';
if (!existsSync(photoDir)) {
  mkdirSync(debDir, { recursive: true });
  const r = spawnSync('apt-get', ['download', ...PHOTO_PACKAGES], { cwd: debDir, stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`apt-get download failed (run apt-get update first?): ${r.stderr}`);
  for (const deb of readdirSync(debDir).filter((f) => f.endsWith('.deb'))) sh('dpkg', ['-x', deb, 'x'], debDir);
  const found = sh('find', ['x', '-type', 'f', '(', '-name', '*.png', '-o', '-name', '*.jpg', ')'], debDir)
    .split('\n')
    .filter((f) => f && ((f.includes('/stamps/') && !NOT_PHOTOS.test(f)) || SAMPLE_PHOTOS.test(f)))
    .sort();
  mkdirSync(photoDir, { recursive: true });
  let i = 0;
  for (const f of found) {
    // Stamps are cut out (alpha): flatten onto white, as a product photo; shrink huge ones.
    const jpg = await sharp(path.join(debDir, f))
      .flatten({ background: '#ffffff' })
      .resize(640, 640, { fit: 'inside', withoutEnlargement: true })
      .jpeg({ quality: 90 })
      .toBuffer();
    writeFileSync(
      path.join(photoDir, `${String(++i).padStart(4, '0')}.${categoryOf(f)}.${path.basename(f).replace(/\.(png|jpg)$/, '')}.jpg`),
      jpg,
    );
  }
  log(`${i} photographs from ${PHOTO_PACKAGES.join(', ')} in ${path.relative(root, photoDir)}`);
}
const photos = readdirSync(photoDir)
  .filter((f) => f.endsWith('.jpg'))
  .sort();
const category = (f) => f.split('.')[1];

/** Fills `dir` with exactly `files` (copies from photoDir). */
function materialize(dir, files) {
  mkdirSync(dir, { recursive: true });
  for (const f of readdirSync(dir)) if (!files.includes(f)) rmSync(path.join(dir, f), { force: true });
  for (const f of files) if (!existsSync(path.join(dir, f))) writeFileSync(path.join(dir, f), readFileSync(path.join(photoDir, f)));
  return dir;
}
// Fixed splits by position in the sorted list, so every category is in each: odd positions
// evaluate; every 6th calibrates; the even ones train the photo head (B below).
const calDir = materialize(path.join(work, 'cal'), photos.filter((_, i) => i % 6 === 0).slice(0, Number(values.cal)));
const evalAll = photos.filter((_, i) => i % 2 === 1);
const evalDir = materialize(path.join(work, 'eval'), evalAll.slice(0, Number(values.eval)));
log(`${readdirSync(calDir).length} calibration and ${readdirSync(evalDir).length} evaluation photographs (of ${photos.length})`);

// ---------------------------------------------------------------------------------------------
// 3. Conversion check against tfjs (pure JavaScript CPU backend; slow, so a few photos)

const ort = await import('onnxruntime-node');
/** The model's input tensor for a photo: the daemon's own preprocessing with the manifest's spec (as model eval does). */
const preprocess = createPreprocessor({ name: modelTopology.model_config.config.input_layers[0][0], ...INPUT_SPEC });
const inputOf = async (file) => (await preprocess(readFileSync(file))).tensor.data;
const nCheck = Number(values.check);
if (nCheck > 0) {
  const tfjsDir = path.join(work, 'tfjs');
  if (!existsSync(path.join(tfjsDir, 'node_modules', '@tensorflow', 'tfjs'))) {
    mkdirSync(tfjsDir, { recursive: true });
    sh(
      'npm',
      ['install', '--prefix', tfjsDir, '--no-save', '--no-audit', '--no-fund', '--ignore-scripts', '@tensorflow/tfjs@4.22.0'],
      tfjsDir,
    );
  }
  const tf = createRequire(path.join(tfjsDir, 'package.json'))('@tensorflow/tfjs');
  await tf.setBackend('cpu');
  const { weightData } = loadWeights();
  const keras = await tf.loadLayersModel(
    tf.io.fromMemory({
      modelTopology,
      weightSpecs: weightsManifest.flatMap((g) => g.weights),
      weightData: weightData.buffer.slice(weightData.byteOffset, weightData.byteOffset + weightData.byteLength),
    }),
  );
  const session = await ort.InferenceSession.create(nsfwModel);
  let worst = 0;
  for (const f of readdirSync(evalDir).sort().slice(0, nCheck)) {
    const x = await inputOf(path.join(evalDir, f));
    const ref = keras.predict(tf.tensor4d(x, [1, SIZE, SIZE, 3])).dataSync();
    const got = (await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x, [1, SIZE, SIZE, 3]) })).probabilities.data;
    const diff = Math.max(...Array.from(ref, (r, i) => Math.abs(r - got[i])));
    worst = Math.max(worst, diff);
    log(
      `check ${f}: tfjs ${Array.from(ref, (v) => v.toFixed(4)).join(' ')} | onnx ${Array.from(got, (v) => v.toFixed(4)).join(' ')} | max |Δ| ${diff.toExponential(2)}`,
    );
  }
  await session.release();
  if (worst > 1e-3) throw new Error(`the ONNX conversion differs from the Keras model by ${worst}`);
  log(`conversion check: ONNX == tfjs on ${nCheck} photos (max |Δp| ${worst.toExponential(2)})`);
}

// ---------------------------------------------------------------------------------------------
// B. A photo classifier: the frozen ImageNet backbone + a softmax-regression head trained here on
//    the stamp categories with enough photographs (what an edge user does with their own classes).

const photoModel = path.join(work, 'inception-v3-photos.onnx');
const HEAD_CLASSES = [...new Set(photos.map(category))]
  .filter((c) => c !== 'misc' && !c.startsWith('seasonal_') && photos.filter((f) => category(f) === c).length >= 10)
  .sort();
const headEval = evalAll.filter((f) => HEAD_CLASSES.includes(category(f)));
const headEvalDir = materialize(path.join(work, 'eval-photo-head'), headEval);
/** Pooled ImageNet features of each photo (FP32 backbone). */
async function features(files) {
  const file = await writeModel(path.join(work, 'backbone.onnx'), 'features');
  const session = await ort.InferenceSession.create(file, { intraOpNumThreads: 2 });
  const out = [];
  for (const f of files)
    out.push(
      (
        await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', await inputOf(path.join(photoDir, f)), [1, SIZE, SIZE, 3]) })
      ).features.data.slice(),
    );
  await session.release();
  return out;
}
/** Multinomial logistic regression, full batch, Adam, L2; deterministic (zero init). */
function trainHead(xs, ys, k) {
  const d = xs[0].length;
  const w = new Float32Array(d * k);
  const b = new Float32Array(k);
  const m = new Float64Array(w.length + k);
  const v = new Float64Array(w.length + k);
  const lr = 0.01;
  const l2 = 1e-3;
  for (let step = 1; step <= 500; step++) {
    const g = new Float64Array(w.length + k);
    for (let n = 0; n < xs.length; n++) {
      const x = xs[n];
      const z = Array.from(b);
      for (let i = 0; i < d; i++) if (x[i] !== 0) for (let j = 0; j < k; j++) z[j] += x[i] * w[i * k + j];
      const mx = Math.max(...z);
      const e = z.map((t) => Math.exp(t - mx));
      const s = e.reduce((a, c) => a + c, 0);
      for (let j = 0; j < k; j++) {
        const dz = (e[j] / s - (ys[n] === j ? 1 : 0)) / xs.length;
        for (let i = 0; i < d; i++) g[i * k + j] += dz * x[i];
        g[w.length + j] += dz;
      }
    }
    for (let i = 0; i < w.length; i++) g[i] += l2 * w[i];
    for (let i = 0; i < g.length; i++) {
      m[i] = 0.9 * m[i] + 0.1 * g[i];
      v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
      const upd = (lr * (m[i] / (1 - 0.9 ** step))) / (Math.sqrt(v[i] / (1 - 0.999 ** step)) + 1e-8);
      if (i < w.length) w[i] -= upd;
      else b[i - w.length] -= upd;
    }
  }
  return { weight: w, bias: b };
}
/** FP32 vs INT8 photo head on its evaluation photographs: accuracy of each, SQNR of the logits, and each flipped top-1 with the FP32 margin (p1 - p2). */
async function compareHeads(fp32, int8, files) {
  const [a, b] = await Promise.all([fp32, int8].map((m) => ort.InferenceSession.create(m, { intraOpNumThreads: 2 })));
  const argmax = (p) => p.indexOf(Math.max(...p));
  let right32 = 0;
  let right8 = 0;
  const logits = new SqnrAccumulator();
  const flips = [];
  for (const f of files) {
    const feed = { [a.inputNames[0]]: new ort.Tensor('float32', await inputOf(path.join(photoDir, f)), [1, SIZE, SIZE, 3]) };
    const [ra, rb] = [await a.run(feed), await b.run(feed)];
    const truth = HEAD_CLASSES.indexOf(category(f));
    const [pa, pb] = [ra.probabilities.data, rb.probabilities.data];
    if (argmax(pa) === truth) right32++;
    if (argmax(pb) === truth) right8++;
    logits.add(ra.logits.data, rb.logits.data);
    if (argmax(pa) !== argmax(pb)) {
      const sorted = [...pa].sort((x, y) => y - x);
      flips.push(
        `${f}: ${HEAD_CLASSES[argmax(pa)]} ${sorted[0].toFixed(3)} vs ${HEAD_CLASSES[argmax(pb)]} (FP32 margin ${(sorted[0] - sorted[1]).toFixed(3)})`,
      );
    }
  }
  await Promise.all([a.release(), b.release()]);
  return { accuracyFp32: right32 / files.length, accuracyInt8: right8 / files.length, logitsSqnrDb: logits.db, flips };
}
if (!existsSync(photoModel)) {
  const trainFiles = photos.filter((f, i) => i % 2 === 0 && HEAD_CLASSES.includes(category(f)));
  const xs = await features(trainFiles);
  const head = trainHead(
    xs,
    trainFiles.map((f) => HEAD_CLASSES.indexOf(category(f))),
    HEAD_CLASSES.length,
  );
  await writeModel(photoModel, head, HEAD_CLASSES, 'probabilities');
  log(`photo head: ${HEAD_CLASSES.length} classes (${HEAD_CLASSES.join(', ')}), trained on ${trainFiles.length} photographs`);
}

// ---------------------------------------------------------------------------------------------
// 4. The CLI a user runs: model quantize, model eval

const cli = path.join(root, 'dist', 'cli.js');
const results = [];
for (const [name, fp32, images] of [
  ['nsfwjs head (5 classes)', nsfwModel, evalDir],
  [`photo head (${HEAD_CLASSES.length} classes)`, photoModel, headEvalDir],
]) {
  const variants = values.variants
    ? values.variants.split(';').map((v) => v.trim().split(/\s+/))
    : values.methods.split(',').map((m) => [m]);
  for (const [method, ...extra] of variants) {
    const variant = [method, ...extra].join(' ');
    const int8 = fp32.replace(/\.onnx$/, `.${variant.replace(/[^a-z0-9.]+/gi, '-')}.int8.onnx`);
    const t0 = Date.now();
    const q = JSON.parse(
      sh('node', [cli, 'model', 'quantize', fp32, int8, '--calibration', calDir, '--method', method, ...extra, '--json']),
    );
    const quantizeSeconds = (Date.now() - t0) / 1000;
    const ev = JSON.parse(sh('node', [cli, 'model', 'eval', fp32, int8, '--images', images, '--repeats', values.repeats, '--json']));
    const head = fp32 === photoModel ? await compareHeads(fp32, int8, headEval) : {};
    const worstLayers = q.worstLayers.slice(0, 3).map((l) => `${l.tensor} (${l.opType}) ${l.sqnrDb.toFixed(1)} dB`);
    const row = {
      model: name,
      method,
      variant,
      heldOut: q.heldOut,
      ...ev,
      ...head,
      quantizeSeconds,
      sizeMB: [q.sizeBytes.before, q.sizeBytes.after].map((b) => +(b / 1e6).toFixed(1)),
      rewrites: q.rewrites,
      warnings: q.warnings,
      worstLayers,
    };
    results.push(row);
    console.log(JSON.stringify(row));
  }
}
writeFileSync(path.join(work, 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
log(`results in ${path.relative(root, path.join(work, 'results.json'))}`);
