/** Generated fixtures for the quantizer and eval tests: a small seeded CNN, images and tensors. */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { asFloat, DataType, makeModel, makeNode, makeTensor, makeValueInfo, onnx } from '../../src/model/onnx.js';

export function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32;
}

/** Approximately normal values (sum of uniforms), deterministic. */
function normals(n: number, std: number, rnd: () => number, mean = 0): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = mean + (rnd() + rnd() + rnd() + rnd() - 2) * std * 1.73;
  return out;
}

export interface SmallCnnOptions {
  seed?: number;
  /** also expose the logits (Gemm output, which feeds the Softmax) as a second graph output */
  logitsOutput?: boolean;
  /** insert an op the quantizer has no int8 kernel for (LRN) after the first Relu */
  unsupportedOp?: boolean;
  /** branch a ends in Clip(0, 6) (ReLU6) instead of Relu */
  relu6?: boolean;
  /** count_include_pad of the pool branch */
  countIncludePad?: 0 | 1;
}

export const SMALL_INPUT = 'image';
export const SMALL_SIZE = 32;

/**
 * image[1,3,32,32] → Conv 3×3 → BN → Relu → MaxPool 2 → { Conv 1×1 → BN → Relu | AvgPool 3×3 →
 * Conv 1×1 (+bias) → Relu } → Concat → GlobalAveragePool → Flatten → Gemm → Softmax → prob.
 */
export function buildSmallCnn(opts: SmallCnnOptions = {}): onnx.ModelProto {
  const rnd = lcg(opts.seed ?? 1);
  const nodes: onnx.NodeProto[] = [];
  const inits: onnx.TensorProto[] = [];
  const t = (name: string, dims: number[], values: Float32Array): string => {
    inits.push(makeTensor(name, DataType.FLOAT, dims, values));
    return name;
  };
  const bn = (prefix: string, c: number, input: string, out: string): void => {
    nodes.push(
      makeNode(
        'BatchNormalization',
        [
          input,
          t(`${prefix}_gamma`, [c], normals(c, 0.2, rnd, 1)),
          t(`${prefix}_beta`, [c], normals(c, 0.3, rnd)),
          t(`${prefix}_mean`, [c], normals(c, 0.5, rnd)),
          t(`${prefix}_var`, [c], normals(c, 0.1, rnd, 1).map(Math.abs)),
        ],
        [out],
        { epsilon: asFloat(1e-5) },
        prefix,
      ),
    );
  };
  nodes.push(
    makeNode(
      'Conv',
      [SMALL_INPUT, t('c1_w', [8, 3, 3, 3], normals(8 * 27, 0.01, rnd))],
      ['c1'],
      { kernel_shape: [3, 3], pads: [1, 1, 1, 1] },
      'conv1',
    ),
  );
  bn('bn1', 8, 'c1', 'b1');
  nodes.push(makeNode('Relu', ['b1'], ['r1'], {}, 'relu1'));
  let poolIn = 'r1';
  if (opts.unsupportedOp) {
    nodes.push(makeNode('LRN', ['r1'], ['lrn1'], { size: 3 }, 'lrn1'));
    poolIn = 'lrn1';
  }
  nodes.push(makeNode('MaxPool', [poolIn], ['p1'], { kernel_shape: [2, 2], strides: [2, 2] }, 'maxpool1'));
  nodes.push(makeNode('Conv', ['p1', t('a_w', [4, 8, 1, 1], normals(32, 0.3, rnd))], ['a1'], { kernel_shape: [1, 1] }, 'branch_a'));
  bn('bn_a', 4, 'a1', 'a2');
  if (opts.relu6) {
    nodes.push(
      makeNode('Clip', ['a2', t('clip_min', [], Float32Array.of(0)), t('clip_max', [], Float32Array.of(6))], ['a3'], {}, 'relu6_a'),
    );
  } else {
    nodes.push(makeNode('Relu', ['a2'], ['a3'], {}, 'relu_a'));
  }
  nodes.push(
    makeNode(
      'AveragePool',
      ['p1'],
      ['b_pool'],
      { kernel_shape: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1], count_include_pad: opts.countIncludePad ?? 0 },
      'branch_b_pool',
    ),
  );
  nodes.push(
    makeNode(
      'Conv',
      ['b_pool', t('b_w', [4, 8, 1, 1], normals(32, 0.3, rnd)), t('b_b', [4], normals(4, 0.5, rnd))],
      ['b1c'],
      { kernel_shape: [1, 1] },
      'branch_b',
    ),
  );
  nodes.push(makeNode('Relu', ['b1c'], ['b2'], {}, 'relu_b'));
  nodes.push(makeNode('Concat', ['a3', 'b2'], ['cat'], { axis: 1 }, 'concat'));
  nodes.push(makeNode('GlobalAveragePool', ['cat'], ['gap'], {}, 'gap'));
  nodes.push(makeNode('Flatten', ['gap'], ['flat'], { axis: 1 }, 'flatten'));
  nodes.push(
    makeNode(
      'Gemm',
      ['flat', t('fc_w', [10, 8], normals(80, 1, rnd)), t('fc_b', [10], normals(10, 0.2, rnd))],
      ['logits'],
      { transB: 1 },
      'fc',
    ),
  );
  nodes.push(makeNode('Softmax', ['logits'], ['prob'], { axis: 1 }, 'softmax'));
  const outputs = [makeValueInfo('prob', DataType.FLOAT, [1, 10])];
  if (opts.logitsOutput) outputs.push(makeValueInfo('logits', DataType.FLOAT, [1, 10]));
  const graph = onnx.GraphProto.create({
    name: 'small_cnn',
    node: nodes,
    initializer: inits,
    input: [makeValueInfo(SMALL_INPUT, DataType.FLOAT, [1, 3, SMALL_SIZE, SMALL_SIZE])],
    output: outputs,
  });
  return makeModel({ graph, opset: 13 });
}

/** Pixel-like inputs (0..255 with smooth structure) for the small CNN. */
export async function* smallInputs(n: number, seed = 3): AsyncGenerator<Float32Array> {
  for (const x of smallInputList(n, seed)) yield x;
}

export function smallInputList(n: number, seed = 3): Float32Array[] {
  const rnd = lcg(seed);
  const out: Float32Array[] = [];
  const hw = SMALL_SIZE * SMALL_SIZE;
  for (let k = 0; k < n; k++) {
    const d = new Float32Array(3 * hw);
    for (let c = 0; c < 3; c++) {
      const fx = rnd() * 0.5;
      const fy = rnd() * 0.5;
      const ph = rnd() * 6;
      for (let i = 0; i < hw; i++) {
        const x = i % SMALL_SIZE;
        const y = Math.floor(i / SMALL_SIZE);
        d[c * hw + i] = 128 + 80 * Math.sin(fx * x + fy * y + ph) + (rnd() - 0.5) * 40;
      }
    }
    out.push(d);
  }
  return out;
}

/** Writes `n` JPEGs of smooth colour fields with a disc and pixel noise into `dir`. */
export async function writeImages(dir: string, n: number, seed = 5, size = 64): Promise<string[]> {
  const rnd = lcg(seed);
  const files: string[] = [];
  for (let k = 0; k < n; k++) {
    const buf = Buffer.alloc(size * size * 3);
    const waves = Array.from({ length: 6 }, () => [rnd() * 0.1, rnd() * 0.1, rnd() * 6, 30 + rnd() * 60] as const);
    const cx = rnd() * size;
    const cy = rnd() * size;
    const r = size * (0.1 + rnd() * 0.3);
    for (let i = 0; i < size * size; i++) {
      const x = i % size;
      const y = Math.floor(i / size);
      const inside = (x - cx) ** 2 + (y - cy) ** 2 < r * r ? 3 : 0;
      for (let c = 0; c < 3; c++) {
        const [fx, fy, ph, a] = waves[(c + inside) % 6]!;
        const v = 128 + a * Math.sin(fx * x + fy * y + ph) + (rnd() - 0.5) * 30;
        buf[i * 3 + c] = Math.max(0, Math.min(255, Math.round(v)));
      }
    }
    const file = path.join(dir, `img${k}.jpg`);
    await writeFile(
      file,
      await sharp(buf, { raw: { width: size, height: size, channels: 3 } })
        .jpeg()
        .toBuffer(),
    );
    files.push(file);
  }
  return files;
}

/** Op types (with domain) of the model ORT actually runs, saved via optimizedModelFilePath. */
export async function optimizedOpTypes(modelPath: string, optimizedPath: string, extra?: Record<string, unknown>): Promise<string[]> {
  const ort = await import('onnxruntime-node');
  const { loadModel } = await import('../../src/model/onnx.js');
  const s = await ort.InferenceSession.create(modelPath, {
    graphOptimizationLevel: 'all',
    optimizedModelFilePath: optimizedPath,
    executionProviders: ['cpu'],
    logSeverityLevel: 3,
    ...(extra ? { extra } : {}),
  });
  await s.release();
  const m = await loadModel(optimizedPath);
  return (m.graph?.node ?? []).map((n) => (n.domain ? `${n.domain}:${n.opType}` : (n.opType ?? '')));
}
