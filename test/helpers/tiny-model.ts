/**
 * Small ONNX classifiers built directly with the protobuf classes, for inference tests (no download;
 * only the `onnx` namespace of src/model/onnx.ts, none of its helpers). Topology: input
 * [1,3,size,size] → Conv 3×3 (+Relu) × depth → GlobalAveragePool → Flatten → Gemm → Softmax
 * (optional). Weights come from a seeded generator, so the same options always give the same model.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { SessionSettings } from '../../src/inference/types.js';
import { onnx } from '../../src/model/onnx.js';
import { mulberry32 } from '../../src/util/index.js';

export interface TinyModelOptions {
  /** Input height and width. Default 8. */
  size?: number;
  /** Channels of every conv layer. Default 4. */
  channels?: number;
  /** Number of conv layers. Default 1. */
  depth?: number;
  classes?: number;
  seed?: number;
  /** End with Softmax (probabilities) or leave logits. Default true. */
  softmax?: boolean;
  inputName?: string;
  outputName?: string;
}

const FLOAT = onnx.TensorProto.DataType.FLOAT;

function initializer(name: string, dims: number[], values: Float32Array): onnx.ITensorProto {
  return { name, dims, dataType: FLOAT, rawData: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) };
}

function valueInfo(name: string, dims: number[]): onnx.IValueInfoProto {
  return {
    name,
    type: { tensorType: { elemType: FLOAT, shape: { dim: dims.map((d) => ({ dimValue: d })) } } },
  };
}

const ints = (name: string, v: number[]): onnx.IAttributeProto => ({ name, type: onnx.AttributeProto.AttributeType.INTS, ints: v });
const int = (name: string, v: number): onnx.IAttributeProto => ({ name, type: onnx.AttributeProto.AttributeType.INT, i: v });

/** Encoded ONNX model bytes. */
export function buildTinyModel(options: TinyModelOptions = {}): Uint8Array {
  const { size = 8, channels = 4, depth = 1, classes = 10, seed = 1, softmax = true } = options;
  const inputName = options.inputName ?? 'input';
  const outputName = options.outputName ?? 'scores';
  const rand = mulberry32(seed);
  // He-style uniform init keeps activations in a sane range however deep the stack is.
  const uniform = (n: number, fanIn: number) => {
    const bound = Math.sqrt(6 / fanIn);
    return new Float32Array(n).map(() => (rand() * 2 - 1) * bound);
  };

  const nodes: onnx.INodeProto[] = [];
  const inits: onnx.ITensorProto[] = [];
  let prev = inputName;
  let inC = 3;
  for (let l = 0; l < depth; l++) {
    const w = `conv${l}.w`;
    const b = `conv${l}.b`;
    inits.push(initializer(w, [channels, inC, 3, 3], uniform(channels * inC * 9, inC * 9)));
    inits.push(initializer(b, [channels], uniform(channels, 10)));
    nodes.push({
      opType: 'Conv',
      input: [prev, w, b],
      output: [`conv${l}`],
      name: `conv${l}`,
      attribute: [ints('kernel_shape', [3, 3]), ints('pads', [1, 1, 1, 1])],
    });
    nodes.push({ opType: 'Relu', input: [`conv${l}`], output: [`relu${l}`], name: `relu${l}` });
    prev = `relu${l}`;
    inC = channels;
  }
  inits.push(initializer('fc.w', [classes, channels], uniform(classes * channels, channels)));
  inits.push(initializer('fc.b', [classes], uniform(classes, 10)));
  nodes.push({ opType: 'GlobalAveragePool', input: [prev], output: ['pool'], name: 'pool' });
  nodes.push({ opType: 'Flatten', input: ['pool'], output: ['flat'], name: 'flat', attribute: [int('axis', 1)] });
  const logits = softmax ? 'logits' : outputName;
  nodes.push({ opType: 'Gemm', input: ['flat', 'fc.w', 'fc.b'], output: [logits], name: 'fc', attribute: [int('transB', 1)] });
  if (softmax) nodes.push({ opType: 'Softmax', input: ['logits'], output: [outputName], name: 'softmax', attribute: [int('axis', 1)] });

  const model: onnx.IModelProto = {
    irVersion: 7,
    producerName: 'inceptiond-tests',
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'tiny',
      node: nodes,
      initializer: inits,
      input: [valueInfo(inputName, [1, 3, size, size])],
      output: [valueInfo(outputName, [1, classes])],
    },
  };
  return onnx.ModelProto.encode(model).finish();
}

/** Writes a tiny model into a fresh temp directory and returns its path. */
export async function writeTinyModel(options: TinyModelOptions = {}, dir?: string): Promise<string> {
  const folder = dir ?? (await mkdtemp(path.join(tmpdir(), 'inceptiond-tiny-')));
  const file = path.join(folder, `tiny-${options.seed ?? 1}.onnx`);
  await writeFile(file, buildTinyModel(options));
  return file;
}

/**
 * A tiny model with a manifest beside it (RGB, pixels scaled to [0, 1] and normalised, stretched to
 * size), so the daemon and `model quantize` can use it like any model.
 */
export async function writeTinyClassifier(dir: string, options: TinyModelOptions = {}): Promise<string> {
  const file = await writeTinyModel(options, dir);
  const size = options.size ?? 8;
  await writeFile(
    `${file}.json`,
    JSON.stringify({
      name: 'tiny',
      file: path.basename(file),
      input: {
        name: options.inputName ?? 'input',
        layout: 'NCHW',
        width: size,
        height: size,
        channels: 'RGB',
        scale: 1 / 255,
        mean: [0.5, 0.5, 0.5],
        std: [0.25, 0.25, 0.25],
        resize: 'fill',
      },
      output: { name: options.outputName ?? 'scores', activation: options.softmax === false ? 'none' : 'softmax' },
    }),
  );
  return file;
}

/** Deterministic input values for a [1,3,size,size] tensor. */
export function seededInput(size: number, seed = 7): Float32Array {
  const rand = mulberry32(seed);
  return new Float32Array(3 * size * size).map(() => rand() * 2 - 1);
}

/** Session settings the engine tests run a model with: CPU, one thread, no spinning, all optimizations. */
export function testSessionSettings(modelPath: string, over: Partial<SessionSettings> = {}): SessionSettings {
  return { modelPath, executionProviders: ['cpu'], threads: 1, allowSpinning: false, graphOptimizationLevel: 'all', ...over };
}
