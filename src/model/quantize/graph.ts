/** Small graph queries over an ONNX GraphProto, shared by the preparation and QDQ passes. */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { onnx } from '../onnx.js';

export type Node = onnx.INodeProto;

export function nodeInputs(n: Node): string[] {
  return n.input ?? [];
}

export function nodeOutputs(n: Node): string[] {
  return n.output ?? [];
}

export function initializerMap(g: onnx.IGraphProto): Map<string, onnx.ITensorProto> {
  const m = new Map<string, onnx.ITensorProto>();
  for (const t of g.initializer ?? []) if (t.name) m.set(t.name, t);
  return m;
}

/** tensor name → nodes reading it (a node reading a tensor twice appears twice). */
export function consumerMap(g: onnx.IGraphProto): Map<string, Node[]> {
  const m = new Map<string, Node[]>();
  for (const n of g.node ?? []) {
    for (const i of nodeInputs(n)) {
      if (!i) continue;
      const list = m.get(i);
      if (list) list.push(n);
      else m.set(i, [n]);
    }
  }
  return m;
}

export function producerMap(g: onnx.IGraphProto): Map<string, Node> {
  const m = new Map<string, Node>();
  for (const n of g.node ?? []) for (const o of nodeOutputs(n)) if (o) m.set(o, n);
  return m;
}

export function graphOutputNames(g: onnx.IGraphProto): Set<string> {
  return new Set((g.output ?? []).map((o) => o.name ?? ''));
}

export function graphInputNames(g: onnx.IGraphProto): Set<string> {
  return new Set((g.input ?? []).map((o) => o.name ?? ''));
}

/** Replaces every read of `from` by `to` (node inputs only). */
export function renameInputs(g: onnx.IGraphProto, from: string, to: string): void {
  for (const n of g.node ?? []) {
    const ins = nodeInputs(n);
    for (let i = 0; i < ins.length; i++) if (ins[i] === from) ins[i] = to;
  }
}

/** Names not yet used by any tensor, node or initializer of the graph. */
export class NameAllocator {
  private readonly used = new Set<string>();

  constructor(g: onnx.IGraphProto) {
    for (const n of g.node ?? []) {
      if (n.name) this.used.add(n.name);
      for (const t of [...nodeInputs(n), ...nodeOutputs(n)]) this.used.add(t);
    }
    for (const t of g.initializer ?? []) if (t.name) this.used.add(t.name);
    for (const v of [...(g.input ?? []), ...(g.output ?? []), ...(g.valueInfo ?? [])]) if (v.name) this.used.add(v.name);
  }

  take(base: string): string {
    let name = base;
    for (let i = 1; this.used.has(name); i++) name = `${base}_${i}`;
    this.used.add(name);
    return name;
  }
}

/** Drops initializers that no node reads and that are not graph outputs. */
export function removeUnusedInitializers(g: onnx.IGraphProto): void {
  const read = new Set<string>();
  for (const n of g.node ?? []) for (const i of nodeInputs(n)) read.add(i);
  for (const o of g.output ?? []) read.add(o.name ?? '');
  g.initializer = (g.initializer ?? []).filter((t) => read.has(t.name ?? ''));
}

/**
 * A copy of `model` that a pass may edit: new model and graph records, new node, input, output and
 * value-info lists, every node a deep copy; the initializers are `model`'s own TensorProto objects,
 * shared, not copied (a float model's weights are most of its size). The pass must therefore replace
 * an initializer, never change one in place.
 */
export function copyForEdit(model: onnx.IModelProto): onnx.ModelProto {
  const g = model.graph ?? {};
  const graph = onnx.GraphProto.create({
    ...g,
    node: (g.node ?? []).map((n) => onnx.NodeProto.decode(onnx.NodeProto.encode(n).finish())),
    initializer: [...(g.initializer ?? [])],
    input: (g.input ?? []).map((v) => onnx.ValueInfoProto.decode(onnx.ValueInfoProto.encode(v).finish())),
    output: (g.output ?? []).map((v) => onnx.ValueInfoProto.decode(onnx.ValueInfoProto.encode(v).finish())),
    valueInfo: (g.valueInfo ?? []).map((v) => onnx.ValueInfoProto.decode(onnx.ValueInfoProto.encode(v).finish())),
  });
  return onnx.ModelProto.create({
    ...model,
    opsetImport: (model.opsetImport ?? []).map((o) => onnx.OperatorSetIdProto.create({ ...o })),
    graph,
  });
}

let gcFunction: (() => void) | null | undefined;

/**
 * A full garbage collection, now. The quantizer drops tens of MB at a time (a model copy, one input's
 * activations of every tensor): left to V8, up to 64 MB of dead ArrayBuffers pile up before a GC
 * (its external-memory limit), and on a 512 MB board that margin is the difference. A no-op where
 * V8 refuses the flag.
 */
export function collectGarbage(): void {
  if (gcFunction === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      gcFunction = runInNewContext('gc') as () => void;
    } catch {
      gcFunction = null;
    }
  }
  gcFunction?.();
}
