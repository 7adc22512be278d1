/** What `model inspect` shows: I/O, opsets, operator histogram, parameters, size, precision. */
import { stat } from 'node:fs/promises';
import { DataType, loadModel, tensorElementCount, toNumber, valueInfoDims, type onnx } from './onnx.js';

export interface TensorInfo {
  name: string;
  type: string;
  shape: (number | string)[];
}

export interface ModelInfo {
  path: string;
  fileSize: number;
  irVersion: number;
  producer: string;
  opsets: { domain: string; version: number }[];
  inputs: TensorInfo[];
  outputs: TensorInfo[];
  nodeCount: number;
  /** Operator type → count, most frequent first. */
  ops: Record<string, number>;
  /** Elements in initializers (weights, biases, BN statistics, quantization parameters). */
  parameters: number;
  precision: 'int8' | 'fp32';
}

const QUANT_OPS = /^(QuantizeLinear|DequantizeLinear|QLinear.*|QGemm|ConvInteger|MatMulInteger|DynamicQuantizeLinear)$/;

function typeName(elemType: number | null | undefined): string {
  return (DataType[elemType ?? 0] ?? `type${elemType}`).toLowerCase();
}

function tensorInfo(vi: onnx.IValueInfoProto): TensorInfo {
  return { name: vi.name ?? '', type: typeName(vi.type?.tensorType?.elemType), shape: valueInfoDims(vi) };
}

export async function inspectModel(modelPath: string): Promise<ModelInfo> {
  const [model, st] = await Promise.all([loadModel(modelPath), stat(modelPath)]);
  const graph = model.graph!;
  const initializerNames = new Set((graph.initializer ?? []).map((t) => t.name));
  const counts = new Map<string, number>();
  for (const n of graph.node ?? []) {
    const op = n.domain && n.domain !== 'ai.onnx' ? `${n.domain}.${n.opType}` : (n.opType ?? '?');
    counts.set(op, (counts.get(op) ?? 0) + 1);
  }
  const ops = Object.fromEntries([...counts].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])));
  const parameters = (graph.initializer ?? []).reduce((n, t) => n + tensorElementCount(t.dims ?? []), 0);
  const precision = (graph.node ?? []).some((n) => QUANT_OPS.test(n.opType ?? '')) ? 'int8' : 'fp32';
  return {
    path: modelPath,
    fileSize: st.size,
    irVersion: toNumber(model.irVersion as number),
    producer: [model.producerName, model.producerVersion].filter(Boolean).join(' '),
    opsets: (model.opsetImport ?? []).map((o) => ({ domain: o.domain || 'ai.onnx', version: toNumber(o.version as number) })),
    // Older exporters list initializers as graph inputs too; they are not inputs to feed.
    inputs: (graph.input ?? []).filter((i) => !initializerNames.has(i.name ?? '')).map(tensorInfo),
    outputs: (graph.output ?? []).map(tensorInfo),
    nodeCount: graph.node?.length ?? 0,
    ops,
    parameters,
    precision,
  };
}

function formatTensor(t: TensorInfo): string {
  return `${t.name}  ${t.type}[${t.shape.join(', ')}]`;
}

export function formatModelInfo(info: ModelInfo): string {
  const mb = (info.fileSize / 1e6).toFixed(1);
  const lines = [
    `model       ${info.path}`,
    `size        ${mb} MB (${info.fileSize} bytes)`,
    `precision   ${info.precision}`,
    `ir version  ${info.irVersion}${info.producer ? `   producer: ${info.producer}` : ''}`,
    `opsets      ${info.opsets.map((o) => `${o.domain} ${o.version}`).join(', ')}`,
    `parameters  ${(info.parameters / 1e6).toFixed(2)} M`,
    'inputs',
    ...info.inputs.map((t) => `  ${formatTensor(t)}`),
    'outputs',
    ...info.outputs.map((t) => `  ${formatTensor(t)}`),
    `operators   ${info.nodeCount} nodes`,
    ...Object.entries(info.ops).map(([op, n]) => `  ${String(n).padStart(5)}  ${op}`),
  ];
  return lines.join('\n');
}
