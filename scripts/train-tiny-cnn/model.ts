/**
 * The tiny network, its trainer-side definition and its ONNX export (opset 13, NCHW, float32).
 *
 *   input [1,3,32,32]
 *   Conv3×3(3→12) BN ReLU MaxPool2 → Conv3×3(12→24) BN ReLU MaxPool2            [24,8,8]
 *   ┌ Conv1×1(24→16) BN ReLU
 *   ├ Conv3×3(24→16) BN ReLU
 *   └ AveragePool3×3/s1/p1 → Conv1×1(24→16, bias) ReLU      → Concat            [48,8,8]
 *   MaxPool2 → Conv3×3(48→64) BN ReLU → GlobalAveragePool → Flatten → Gemm(64→10) → Softmax
 */
import { asFloat, DataType, makeModel, makeNode, makeTensor, makeValueInfo, onnx } from '../../src/model/onnx.js';
import {
  AvgPool3,
  BatchNorm,
  Branches,
  Conv,
  GlobalAvgPool,
  Linear,
  MaxPool2,
  Relu,
  Sequential,
  type Layer,
  type Param,
  type T,
} from './nn.js';

export const INPUT_NAME = 'input';
export const OUTPUT_NAME = 'prob';
export const INPUT_SIZE = 32;

export class TinyCnn {
  readonly net: Sequential;
  readonly conv1: Conv;
  constructor(
    rand: () => number,
    readonly classes: number,
  ) {
    this.conv1 = new Conv('conv1', 3, 12, 3, false, rand);
    this.conv1.needInputGrad = false;
    const cbr = (name: string, cin: number, cout: number, k: number): Layer[] => [
      new Conv(name, cin, cout, k, false, rand),
      new BatchNorm(`${name}_bn`, cout),
      new Relu(),
    ];
    this.net = new Sequential([
      this.conv1,
      new BatchNorm('conv1_bn', 12),
      new Relu(),
      new MaxPool2(),
      ...cbr('conv2', 12, 24, 3),
      new MaxPool2(),
      new Branches([
        new Sequential(cbr('mix_a', 24, 16, 1)),
        new Sequential(cbr('mix_b', 24, 16, 3)),
        new Sequential([new AvgPool3(), new Conv('mix_c', 24, 16, 1, true, rand), new Relu()]),
      ]),
      new MaxPool2(),
      ...cbr('conv4', 48, 64, 3),
      new GlobalAvgPool(),
      new Linear('fc', 64, classes, rand),
    ]);
  }
  params(): Param[] {
    return this.net.params();
  }
  /** logits */
  forward(x: T, train: boolean): T {
    return this.net.forward(x, train);
  }
  backward(d: T): void {
    this.net.backward(d);
  }
}

/** Exports the network with trained weights and BN running statistics (BatchNormalization kept as nodes). */
export function exportOnnx(model: TinyCnn): onnx.ModelProto {
  const nodes: onnx.NodeProto[] = [];
  const inits: onnx.TensorProto[] = [];
  const F = DataType.FLOAT;
  const init = (name: string, dims: number[], v: Float32Array): string => {
    inits.push(makeTensor(name, F, dims, Float32Array.from(v)));
    return name;
  };
  let pool = 0;
  let relu = 0;
  const emit = (layer: Layer, x: string): string => {
    if (layer instanceof Sequential) {
      let y = x;
      for (const l of layer.layers) y = emit(l, y);
      return y;
    }
    if (layer instanceof Branches) {
      const outs = layer.branches.map((b) => emit(b, x));
      nodes.push(makeNode('Concat', outs, ['mix_concat'], { axis: 1 }));
      return 'mix_concat';
    }
    if (layer instanceof Conv) {
      const w = init(layer.weight.name, layer.weight.dims, layer.weight.value);
      const ins = [x, w];
      if (layer.bias) ins.push(init(layer.bias.name, layer.bias.dims, layer.bias.value));
      const p = layer.pad;
      nodes.push(makeNode('Conv', ins, [layer.name], { kernel_shape: [layer.k, layer.k], pads: [p, p, p, p], strides: [1, 1] }));
      return layer.name;
    }
    if (layer instanceof BatchNorm) {
      const c = layer.c;
      const ins = [
        x,
        init(layer.gamma.name, [c], layer.gamma.value),
        init(layer.beta.name, [c], layer.beta.value),
        init(`${layer.name}.mean`, [c], layer.runningMean),
        init(`${layer.name}.var`, [c], layer.runningVar),
      ];
      nodes.push(makeNode('BatchNormalization', ins, [layer.name], { epsilon: asFloat(layer.eps), momentum: asFloat(1 - layer.momentum) }));
      return layer.name;
    }
    if (layer instanceof Relu) {
      const y = `relu${++relu}`;
      nodes.push(makeNode('Relu', [x], [y]));
      return y;
    }
    if (layer instanceof MaxPool2) {
      const y = `maxpool${++pool}`;
      nodes.push(makeNode('MaxPool', [x], [y], { kernel_shape: [2, 2], strides: [2, 2] }));
      return y;
    }
    if (layer instanceof AvgPool3) {
      const y = `avgpool${++pool}`;
      nodes.push(makeNode('AveragePool', [x], [y], { kernel_shape: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1], count_include_pad: 0 }));
      return y;
    }
    if (layer instanceof GlobalAvgPool) {
      nodes.push(makeNode('GlobalAveragePool', [x], ['gap']));
      nodes.push(makeNode('Flatten', ['gap'], ['flat'], { axis: 1 }));
      return 'flat';
    }
    if (layer instanceof Linear) {
      const w = init(layer.weight.name, layer.weight.dims, layer.weight.value);
      const b = init(layer.bias.name, layer.bias.dims, layer.bias.value);
      nodes.push(makeNode('Gemm', [x, w, b], ['logits'], { transB: 1 }));
      return 'logits';
    }
    throw new Error(`export: unknown layer ${layer.constructor.name}`);
  };
  const logits = emit(model.net, INPUT_NAME);
  nodes.push(makeNode('Softmax', [logits], [OUTPUT_NAME], { axis: 1 }));
  const graph = onnx.GraphProto.create({
    name: 'tiny-cnn',
    node: nodes,
    initializer: inits,
    input: [makeValueInfo(INPUT_NAME, F, [1, 3, INPUT_SIZE, INPUT_SIZE])],
    output: [makeValueInfo(OUTPUT_NAME, F, [1, model.classes])],
  });
  return makeModel({ graph, opset: 13, irVersion: 7, producer: 'inceptiond scripts/train-tiny-cnn' });
}
