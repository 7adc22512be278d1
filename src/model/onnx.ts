/**
 * ONNX protobuf I/O and small graph-construction helpers.
 *
 * Everything here works on protobufjs static classes generated from the current ONNX schema
 * (src/model/onnx-proto/onnx.proto, IR 10; `npm run proto` regenerates them; see docs/ARCHITECTURE.md),
 * so fields of newer IR versions survive a decode → encode. The `onnx` namespace is re-exported so
 * callers never import the generated module themselves.
 */
import { readFile } from 'node:fs/promises';
import { endianness } from 'node:os';
import { writeFileAtomic } from '../util/index.js';
import onnxProto from './onnx-proto/onnx.cjs';

// `import x = ns.member` keeps both the value (classes) and the types (onnx.ModelProto, …) under one name;
// a plain named import does not work at run time because the generated module is CommonJS.
import onnx = onnxProto.onnx;
export { onnx };

export const DataType = onnx.TensorProto.DataType;
export const AttributeType = onnx.AttributeProto.AttributeType;

/** Protobuf int64 fields decode to `Long` objects (the `long` package is installed) or numbers. */
type LongLike = number | { toNumber(): number; toString(): string };

export function toNumber(v: LongLike | null | undefined): number {
  if (v === null || v === undefined) return 0;
  return typeof v === 'number' ? v : v.toNumber();
}

function toBigInt(v: LongLike): bigint {
  return typeof v === 'number' ? BigInt(v) : BigInt(v.toString());
}

// ---------------------------------------------------------------------------------------------
// Model I/O

export function decodeModel(bytes: Uint8Array): onnx.ModelProto {
  return onnx.ModelProto.decode(bytes);
}

/** Reads and decodes an ONNX file; garbage gives `not an ONNX model: <path>: <reason>`. */
export async function loadModel(filePath: string): Promise<onnx.ModelProto> {
  const bytes = await readFile(filePath);
  let model: onnx.ModelProto;
  try {
    model = decodeModel(bytes);
  } catch (err) {
    throw new Error(`not an ONNX model: ${filePath}: ${(err as Error).message}`);
  }
  // Random bytes can occasionally decode as a valid protobuf; a model must have a graph.
  if (!model.graph || toNumber(model.irVersion as LongLike) <= 0) {
    throw new Error(`not an ONNX model: ${filePath}: no graph or ir_version`);
  }
  return model;
}

export function encodeModel(m: onnx.IModelProto): Uint8Array {
  return onnx.ModelProto.encode(m).finish();
}

/** Writes atomically (util's writeFileAtomic): readers never see half a file. */
export async function saveModel(m: onnx.IModelProto, filePath: string): Promise<void> {
  await writeFileAtomic(filePath, encodeModel(m));
}

export function opsetVersion(model: onnx.IModelProto, domain = ''): number | undefined {
  for (const o of model.opsetImport ?? []) {
    const d = o.domain ?? '';
    if (d === domain || (domain === 'ai.onnx' && d === '') || (domain === '' && d === 'ai.onnx')) {
      return toNumber(o.version as LongLike);
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Tensors

export function tensorElementCount(dims: ReadonlyArray<LongLike>): number {
  let n = 1;
  for (const d of dims) n *= toNumber(d);
  return n;
}

const littleEndianHost = endianness() === 'LE';

/** Copies raw_data into a fresh, aligned buffer (protobuf slices may start at any byte offset). */
function alignedRaw(raw: Uint8Array, bytesPerElement: number, name: string): ArrayBuffer {
  if (raw.byteLength % bytesPerElement !== 0) {
    throw new Error(`tensor ${name}: raw_data length ${raw.byteLength} is not a multiple of ${bytesPerElement}`);
  }
  const buf = new ArrayBuffer(raw.byteLength);
  new Uint8Array(buf).set(raw);
  if (!littleEndianHost && bytesPerElement > 1) {
    // ONNX raw_data is little-endian; swap for big-endian hosts.
    const b = new Uint8Array(buf);
    for (let i = 0; i < b.length; i += bytesPerElement) b.subarray(i, i + bytesPerElement).reverse();
  }
  return buf;
}

function checkNotExternal(t: onnx.ITensorProto): void {
  if (t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL || (t.externalData?.length ?? 0) > 0) {
    throw new Error(`tensor ${t.name ?? '?'}: external data is not supported`);
  }
}

function hasRaw(t: onnx.ITensorProto): t is onnx.ITensorProto & { rawData: Uint8Array } {
  return t.rawData instanceof Uint8Array && t.rawData.byteLength > 0;
}

export function tensorToFloat32(t: onnx.ITensorProto): Float32Array {
  checkNotExternal(t);
  const name = t.name ?? '?';
  if (t.dataType === DataType.FLOAT) {
    if (hasRaw(t)) return new Float32Array(alignedRaw(t.rawData, 4, name));
    return Float32Array.from(t.floatData ?? []);
  }
  if (t.dataType === DataType.DOUBLE) {
    if (hasRaw(t)) return Float32Array.from(new Float64Array(alignedRaw(t.rawData, 8, name)));
    return Float32Array.from(t.doubleData ?? []);
  }
  throw new Error(`tensor ${name}: expected FLOAT data, got ${DataType[t.dataType ?? 0] ?? t.dataType}`);
}

export function tensorToInt64(t: onnx.ITensorProto): BigInt64Array {
  checkNotExternal(t);
  const name = t.name ?? '?';
  if (t.dataType === DataType.INT64) {
    if (hasRaw(t)) return new BigInt64Array(alignedRaw(t.rawData, 8, name));
    return BigInt64Array.from((t.int64Data ?? []).map((v) => toBigInt(v as LongLike)));
  }
  if (t.dataType === DataType.INT32) {
    if (hasRaw(t)) return BigInt64Array.from(new Int32Array(alignedRaw(t.rawData, 4, name)), (v) => BigInt(v));
    return BigInt64Array.from((t.int32Data ?? []).map((v) => BigInt(v)));
  }
  throw new Error(`tensor ${name}: expected INT64 or INT32 data, got ${DataType[t.dataType ?? 0] ?? t.dataType}`);
}

/** Shape-like int64/int32 tensors as plain numbers (values beyond 2^53 lose precision). */
export function tensorToNumbers(t: onnx.ITensorProto): number[] {
  return Array.from(tensorToInt64(t), (v) => Number(v));
}

export type TensorValues = Float32Array | Int8Array | Uint8Array | Int32Array | BigInt64Array | Uint16Array | Int16Array;

const bytesPerElement: Partial<Record<number, number>> = {
  [DataType.FLOAT]: 4,
  [DataType.UINT8]: 1,
  [DataType.INT8]: 1,
  [DataType.UINT16]: 2,
  [DataType.INT16]: 2,
  [DataType.INT32]: 4,
  [DataType.INT64]: 8,
  [DataType.BOOL]: 1,
  [DataType.FLOAT16]: 2,
  [DataType.BFLOAT16]: 2,
};

/** Builds an initializer with little-endian raw_data; dims [] makes a scalar. */
export function makeTensor(name: string, dataType: number, dims: number[], values: TensorValues): onnx.TensorProto {
  const size = bytesPerElement[dataType];
  if (size === undefined) throw new Error(`makeTensor ${name}: unsupported data type ${dataType}`);
  if (values.BYTES_PER_ELEMENT !== size) {
    throw new Error(`makeTensor ${name}: ${values.constructor.name} does not match ${DataType[dataType]} (${size} bytes per element)`);
  }
  const count = tensorElementCount(dims);
  if (values.length !== count) {
    throw new Error(`makeTensor ${name}: ${values.length} values for dims [${dims.join(',')}] (${count} expected)`);
  }
  const raw = new Uint8Array(values.byteLength);
  raw.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
  if (!littleEndianHost && size > 1) {
    for (let i = 0; i < raw.length; i += size) raw.subarray(i, i + size).reverse();
  }
  return onnx.TensorProto.create({ name, dataType, dims, rawData: raw });
}

// ---------------------------------------------------------------------------------------------
// Nodes and attributes

/** Float attributes must be wrapped so `alpha: asFloat(1)` and `axis: 1` can never be confused. */
export interface FloatAttr {
  readonly float: number;
}
export interface FloatsAttr {
  readonly floats: readonly number[];
}
export interface StringsAttr {
  readonly strings: readonly string[];
}
/**
 * Attribute values for {@link makeNode}:
 * - `number` → INT (must be an integer), `number[]` → INTS,
 * - `asFloat(x)` → FLOAT, `asFloats(xs)` → FLOATS,
 * - `string` → STRING, `asStrings(xs)` → STRINGS, a tensor → TENSOR.
 */
export type AttrValue = number | number[] | string | FloatAttr | FloatsAttr | StringsAttr | onnx.ITensorProto;

export const asFloat = (x: number): FloatAttr => ({ float: x });
export const asFloats = (xs: readonly number[]): FloatsAttr => ({ floats: xs });
export const asStrings = (xs: readonly string[]): StringsAttr => ({ strings: xs });

function makeAttribute(name: string, v: AttrValue): onnx.AttributeProto {
  const A = onnx.AttributeProto;
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) {
      throw new Error(`attribute ${name}: ${v} is not an integer; wrap floats with asFloat()`);
    }
    return A.create({ name, type: AttributeType.INT, i: v });
  }
  if (typeof v === 'string') {
    return A.create({ name, type: AttributeType.STRING, s: new TextEncoder().encode(v) });
  }
  if (Array.isArray(v)) {
    for (const x of v) {
      if (!Number.isInteger(x)) throw new Error(`attribute ${name}: ${x} is not an integer; wrap with asFloats()`);
    }
    return A.create({ name, type: AttributeType.INTS, ints: v });
  }
  if ('float' in v && typeof v.float === 'number') {
    return A.create({ name, type: AttributeType.FLOAT, f: v.float });
  }
  if ('floats' in v && Array.isArray(v.floats)) {
    return A.create({ name, type: AttributeType.FLOATS, floats: [...v.floats] });
  }
  if ('strings' in v && Array.isArray(v.strings)) {
    const enc = new TextEncoder();
    return A.create({ name, type: AttributeType.STRINGS, strings: v.strings.map((s) => enc.encode(s)) });
  }
  return A.create({ name, type: AttributeType.TENSOR, t: v as onnx.ITensorProto });
}

export function makeNode(
  opType: string,
  inputs: string[],
  outputs: string[],
  attrs: Record<string, AttrValue> = {},
  name?: string,
  domain?: string,
): onnx.NodeProto {
  return onnx.NodeProto.create({
    opType,
    input: inputs,
    output: outputs,
    name: name ?? outputs[0] ?? opType,
    ...(domain ? { domain } : {}),
    attribute: Object.entries(attrs).map(([k, v]) => makeAttribute(k, v)),
  });
}

export function getAttr(node: onnx.INodeProto, name: string): onnx.IAttributeProto | undefined {
  return node.attribute?.find((a) => a.name === name) ?? undefined;
}

export function attrInt(node: onnx.INodeProto, name: string, def: number): number {
  const a = getAttr(node, name);
  return a ? toNumber(a.i as LongLike) : def;
}

export function attrInts(node: onnx.INodeProto, name: string, def: number[] = []): number[] {
  const a = getAttr(node, name);
  return a ? (a.ints ?? []).map((v) => toNumber(v as LongLike)) : def;
}

export function attrFloat(node: onnx.INodeProto, name: string, def: number): number {
  const a = getAttr(node, name);
  return a ? (a.f ?? 0) : def;
}

export function attrFloats(node: onnx.INodeProto, name: string, def: number[] = []): number[] {
  const a = getAttr(node, name);
  return a ? [...(a.floats ?? [])] : def;
}

export function attrString(node: onnx.INodeProto, name: string, def: string): string {
  const a = getAttr(node, name);
  return a?.s ? new TextDecoder().decode(a.s) : def;
}

// ---------------------------------------------------------------------------------------------
// Value infos and models

/** Dims: a number is a fixed size, a string a symbolic one (e.g. 'N'). */
export function makeValueInfo(name: string, elemType: number, dims: (number | string)[]): onnx.ValueInfoProto {
  return onnx.ValueInfoProto.create({
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  });
}

/** Shape of a value info: numbers for fixed dims, strings for symbolic ones, '?' when unknown. */
export function valueInfoDims(vi: onnx.IValueInfoProto): (number | string)[] {
  const dims = vi.type?.tensorType?.shape?.dim ?? [];
  return dims.map((d) =>
    d.dimParam ? d.dimParam : d.dimValue !== undefined && d.dimValue !== null ? toNumber(d.dimValue as LongLike) : '?',
  );
}

export interface MakeModelOptions {
  graph: onnx.IGraphProto;
  opset: number;
  irVersion?: number;
  producer?: string;
  extraOpsets?: { domain: string; version: number }[];
}

export function makeModel(opts: MakeModelOptions): onnx.ModelProto {
  return onnx.ModelProto.create({
    irVersion: opts.irVersion ?? 7,
    producerName: opts.producer ?? 'inceptiond',
    opsetImport: [{ domain: '', version: opts.opset }, ...(opts.extraOpsets ?? []).map((o) => ({ domain: o.domain, version: o.version }))],
    graph: opts.graph,
  });
}
