/**
 * Model I/O at the current ONNX schema (src/model/onnx-proto/, docs/ARCHITECTURE.md): the generated code
 * is current, fields added after IR 8 (float8 and int4 data types, node overload and metadata, function
 * attribute protos, value infos and overload, graph, tensor and value-info metadata) survive decode →
 * encode and loadModel → saveModel byte for byte, and so do the project's own built and quantized models.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs/minimal.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeBuiltModel } from '../../src/model/build.js';
import {
  attrFloats,
  attrInts,
  DataType,
  decodeModel,
  encodeModel,
  loadModel,
  makeNode,
  onnx,
  saveModel,
  toNumber,
} from '../../src/model/onnx.js';
import { quantizeModel } from '../../src/model/quantize/index.js';
import { buildSmallCnn, smallInputs } from './quantize-fixtures.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const protoDir = path.join(root, 'src', 'model', 'onnx-proto');

/**
 * The field numbers each message had in onnx-proto 8.0.1 (ONNX 1.10.2, IR 8), the package this code
 * used before: read from its encoders. A field outside these was dropped when a model was decoded.
 */
const IR8_FIELDS: Readonly<Record<string, readonly number[]>> = {
  NodeProto: [1, 2, 3, 4, 5, 6, 7],
  GraphProto: [1, 2, 5, 10, 11, 12, 13, 14, 15],
  TensorProto: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14],
  ValueInfoProto: [1, 2, 3],
  FunctionProto: [1, 4, 5, 6, 7, 8, 9, 10],
};
/** The last TensorProto.DataType of IR 8. */
const IR8_LAST_DATA_TYPE = 16; // BFLOAT16

// ---------------------------------------------------------------------------------------------
// A model written field by field with protobufjs's Writer, independent of the generated encoders.
// Fields go in ascending number, as protobufjs's encoders write them, so a faithful round trip gives
// the same bytes.

type Field = (w: protobuf.Writer) => void;
const LEN = 2;
const I32 = 5;
const tag = (field: number, wireType: number): number => (field << 3) | wireType;
const str =
  (field: number, s: string): Field =>
  (w) =>
    w.uint32(tag(field, LEN)).string(s);
const varint =
  (field: number, n: number): Field =>
  (w) =>
    w.uint32(tag(field, 0)).int64(n);
const f32 =
  (field: number, x: number): Field =>
  (w) =>
    w.uint32(tag(field, I32)).float(x);
const raw =
  (field: number, b: Uint8Array): Field =>
  (w) =>
    w.uint32(tag(field, LEN)).bytes(b);
const msg =
  (field: number, ...fields: Field[]): Field =>
  (w) => {
    w.uint32(tag(field, LEN)).fork();
    for (const f of fields) f(w);
    w.ldelim();
  };
const packedInt32 =
  (field: number, values: number[]): Field =>
  (w) => {
    w.uint32(tag(field, LEN)).fork();
    for (const v of values) w.int32(v);
    w.ldelim();
  };
const entry = (field: number, key: string, value: string): Field => msg(field, str(1, key), str(2, value));
function bytesOf(...fields: Field[]): Uint8Array {
  const w = protobuf.Writer.create();
  for (const f of fields) f(w);
  return w.finish();
}

const FLOAT8E4M3FN = 17;
const UINT4 = 21;
const INT4 = 22;

/** One new field of a message (by its field number) that the test writes and expects back. */
const written: { message: string; field: number; what: string }[] = [
  { message: 'NodeProto', field: 8, what: 'overload' },
  { message: 'NodeProto', field: 9, what: 'metadata_props' },
  { message: 'GraphProto', field: 16, what: 'metadata_props' },
  { message: 'TensorProto', field: 16, what: 'metadata_props' },
  { message: 'ValueInfoProto', field: 4, what: 'metadata_props' },
  { message: 'FunctionProto', field: 11, what: 'attribute_proto' },
  { message: 'FunctionProto', field: 12, what: 'value_info' },
  { message: 'FunctionProto', field: 13, what: 'overload' },
  { message: 'FunctionProto', field: 14, what: 'metadata_props' },
];

const tensorType = (field: number, elemType: number, dims: number[]): Field =>
  msg(field, msg(1, varint(1, elemType), msg(2, ...dims.map((d) => msg(1, varint(1, d))))));

/** IR 10: y = Scaled<alpha>(x), a model-local function with an overload, over a float8, an int4 and a uint4 tensor. */
const ir10Model = bytesOf(
  varint(1, 10), // ir_version
  str(2, 'inceptiond-test'), // producer_name
  msg(
    7, // graph
    msg(
      1, // node: calls the function's overload, with metadata
      str(1, 'x'),
      str(2, 'y'),
      str(3, 'call'),
      str(4, 'Scaled'),
      str(7, 'local'),
      str(8, 'v2'),
      entry(9, 'origin', 'hand-written'),
    ),
    str(2, 'g'),
    // initializers: FLOAT8E4M3FN raw bytes, INT4 packed two per byte with metadata, UINT4 in int32_data
    msg(5, varint(1, 4), varint(2, FLOAT8E4M3FN), str(8, 'f8'), raw(9, new Uint8Array([0x38, 0x40, 0xb8, 0x7e]))),
    msg(5, varint(1, 3), varint(2, INT4), str(8, 'i4'), raw(9, new Uint8Array([0x7f, 0x08])), entry(16, 'packing', '4bitx2')),
    msg(5, varint(1, 2), varint(2, UINT4), packedInt32(5, [0xf1]), str(8, 'u4')),
    msg(11, str(1, 'x'), tensorType(2, DataType.FLOAT, [1, 4]), entry(4, 'layout', 'NC')), // input with metadata
    msg(12, str(1, 'y'), tensorType(2, DataType.FLOAT, [1, 4])), // output
    entry(16, 'stage', 'test'), // graph metadata_props
  ),
  msg(8, str(1, ''), varint(2, 21)), // opset_import
  msg(8, str(1, 'local'), varint(2, 1)),
  entry(14, 'model-key', 'model-value'), // model metadata_props (known to IR 8 too)
  msg(
    25, // functions
    str(1, 'Scaled'),
    str(4, 'x'),
    str(5, 'y'),
    // alpha_t = Constant<value_float = @alpha>; y = Mul(x, alpha_t)
    msg(
      7,
      str(2, 'alpha_t'),
      str(4, 'Constant'),
      msg(5, str(1, 'value_float'), varint(20, onnx.AttributeProto.AttributeType.FLOAT), str(21, 'alpha')),
    ),
    msg(7, str(1, 'x'), str(1, 'alpha_t'), str(2, 'y'), str(4, 'Mul')),
    msg(9, str(1, ''), varint(2, 21)),
    str(10, 'local'),
    msg(11, str(1, 'alpha'), f32(2, 0.5), varint(20, onnx.AttributeProto.AttributeType.FLOAT)), // attribute_proto with a default
    msg(12, str(1, 'alpha_t'), tensorType(2, DataType.FLOAT, [])), // value_info
    str(13, 'v2'), // overload
    entry(14, 'fn-key', 'fn-value'), // metadata_props
  ),
);

const meta = (props: onnx.IStringStringEntryProto[] | null | undefined): Record<string, string> =>
  Object.fromEntries((props ?? []).map((p) => [p.key ?? '', p.value ?? '']));

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'onnx-schema-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('src/model/onnx-proto (generated from onnx.proto)', () => {
  it('is current: `npm run proto` regenerates the committed onnx.cjs and onnx.d.cts', async () => {
    const out = await mkdtemp(path.join(dir, 'proto-'));
    execFileSync(process.execPath, [path.join(root, 'scripts', 'onnx-proto.mjs'), out], { stdio: 'pipe' });
    for (const file of ['onnx.cjs', 'onnx.d.cts']) {
      expect(await readFile(path.join(out, file), 'utf8'), file).toBe(await readFile(path.join(protoDir, file), 'utf8'));
    }
  }, 60_000);

  it('is at IR 10 or later, with the data types IR 8 lacked', () => {
    expect(onnx.Version.IR_VERSION).toBeGreaterThanOrEqual(10);
    expect(DataType.FLOAT8E4M3FN).toBe(FLOAT8E4M3FN);
    expect(DataType.FLOAT8E5M2FNUZ).toBe(20);
    expect(DataType.UINT4).toBe(UINT4);
    expect(DataType.INT4).toBe(INT4);
    expect(onnx.AttributeProto.AttributeType.TYPE_PROTOS).toBe(14);
  });
});

describe('ONNX fields newer than IR 8', () => {
  it('are ones onnx-proto (IR 8) did not know', () => {
    for (const { message, field, what } of written) expect(IR8_FIELDS[message], `${message}.${what}`).not.toContain(field);
    for (const t of [FLOAT8E4M3FN, UINT4, INT4]) expect(t).toBeGreaterThan(IR8_LAST_DATA_TYPE);
  });

  it('decode into the onnx classes and encode back to the same bytes', () => {
    const m = decodeModel(ir10Model);
    const g = m.graph!;
    const node = g.node![0]!;
    expect(node.overload).toBe('v2');
    expect(meta(node.metadataProps)).toEqual({ origin: 'hand-written' });
    expect(meta(g.metadataProps)).toEqual({ stage: 'test' });
    expect(g.initializer!.map((t) => [t.name, t.dataType])).toEqual([
      ['f8', DataType.FLOAT8E4M3FN],
      ['i4', DataType.INT4],
      ['u4', DataType.UINT4],
    ]);
    expect(meta(g.initializer![1]!.metadataProps)).toEqual({ packing: '4bitx2' });
    expect(meta(g.input![0]!.metadataProps)).toEqual({ layout: 'NC' });
    const fn = m.functions![0]!;
    expect(fn.overload).toBe('v2');
    expect(fn.attributeProto!.map((a) => [a.name, a.f])).toEqual([['alpha', 0.5]]);
    expect(fn.valueInfo!.map((v) => v.name)).toEqual(['alpha_t']);
    expect(fn.node!.map((n) => n.opType)).toEqual(['Constant', 'Mul']);
    expect(fn.node![0]!.attribute![0]!.refAttrName).toBe('alpha');
    expect(meta(fn.metadataProps)).toEqual({ 'fn-key': 'fn-value' });

    expect(Buffer.from(encodeModel(m)).equals(Buffer.from(ir10Model))).toBe(true);
  });

  it('survive loadModel → saveModel byte for byte', async () => {
    const input = path.join(dir, 'ir10.onnx');
    const output = path.join(dir, 'ir10.saved.onnx');
    await writeFile(input, ir10Model);
    await saveModel(await loadModel(input), output);
    expect((await readFile(output)).equals(Buffer.from(ir10Model))).toBe(true);
  });

  it('that a model carries outside what the quantizer rewrites come out of `model quantize`', async () => {
    const fp32 = buildSmallCnn({ seed: 2 });
    fp32.irVersion = 10;
    fp32.opsetImport!.push({ domain: 'local', version: 1 });
    fp32.graph!.metadataProps = [{ key: 'stage', value: 'test' }];
    fp32.graph!.input![0]!.metadataProps = [{ key: 'layout', value: 'NCHW' }];
    fp32.functions = [
      onnx.FunctionProto.create({
        name: 'Twice',
        domain: 'local',
        overload: 'v2',
        input: ['x'],
        output: ['y'],
        node: [makeNode('Add', ['x', 'x'], ['y'])],
        opsetImport: [{ domain: '', version: 13 }],
        valueInfo: [{ name: 'y' }],
        metadataProps: [{ key: 'fn-key', value: 'fn-value' }],
      }),
    ];
    const input = path.join(dir, 'small-ir10.onnx');
    const output = path.join(dir, 'small-ir10.int8.onnx');
    await saveModel(fp32, input);
    await quantizeModel({ input, output, calibration: { images: smallInputs(2) }, method: 'minmax' });
    const int8 = await loadModel(output);
    const int8Bytes = await readFile(output);
    expect(Buffer.from(encodeModel(decodeModel(int8Bytes))).equals(int8Bytes)).toBe(true);
    expect(int8.graph!.node!.some((n) => n.opType === 'QuantizeLinear')).toBe(true);
    expect(meta(int8.graph!.metadataProps)).toEqual({ stage: 'test' });
    expect(meta(int8.graph!.input![0]!.metadataProps)).toEqual({ layout: 'NCHW' });
    expect(int8.functions!.map((f) => [f.name, f.overload, f.valueInfo?.length, meta(f.metadataProps)])).toEqual([
      ['Twice', 'v2', 1, { 'fn-key': 'fn-value' }],
    ]);
  }, 60_000);
});

describe("the project's own models", () => {
  it('the built FP32 Inception V2 (src/model/build.ts) is identical after decode → encode and loadModel → saveModel', async () => {
    const { modelPath } = await writeBuiltModel(path.join(dir, 'built.onnx'), { seed: 1 });
    const bytes = await readFile(modelPath);
    expect(bytes.length).toBeGreaterThan(40e6);
    expect(Buffer.from(encodeModel(decodeModel(bytes))).equals(bytes)).toBe(true);
    const saved = path.join(dir, 'built.saved.onnx');
    await saveModel(await loadModel(modelPath), saved);
    expect((await readFile(saved)).equals(bytes)).toBe(true);
  }, 120_000);

  it('reads the packed repeated fields onnx-proto wrote, and writes them unpacked as proto2 (and protoc) does', () => {
    // onnx-proto's encoders packed AttributeProto.ints/floats and TensorProto.dims although onnx.proto
    // (proto2) does not mark them packed; every protobuf decoder reads both forms.
    const node = (ints: Field, floats: Field): Field =>
      msg(
        1,
        str(1, 'x'),
        str(2, 'y'),
        str(4, 'Pad'),
        msg(5, str(1, 'pads'), ints, varint(20, 7)),
        msg(5, str(1, 'v'), floats, varint(20, 6)),
      );
    const tensor = (dims: Field): Field => msg(5, dims, varint(2, DataType.FLOAT), str(8, 'w'), raw(9, new Uint8Array(8)));
    const packedInt64 =
      (field: number, values: number[]): Field =>
      (w) => {
        w.uint32(tag(field, LEN)).fork();
        for (const v of values) w.int64(v);
        w.ldelim();
      };
    const packedFloat =
      (field: number, values: number[]): Field =>
      (w) => {
        w.uint32(tag(field, LEN)).fork();
        for (const v of values) w.float(v);
        w.ldelim();
      };
    const each =
      (one: (field: number, v: number) => Field, field: number, values: number[]): Field =>
      (w) => {
        for (const v of values) one(field, v)(w);
      };
    const model = (ints: Field, floats: Field, dims: Field): Uint8Array =>
      bytesOf(varint(1, 8), msg(7, node(ints, floats), str(2, 'g'), tensor(dims)), msg(8, str(1, ''), varint(2, 13)));
    const byOnnxProto = model(packedInt64(8, [1, 2, 3, 4]), packedFloat(7, [0.5, 2]), packedInt64(1, [1, 2]));
    const byProtoc = model(each(varint, 8, [1, 2, 3, 4]), each(f32, 7, [0.5, 2]), each(varint, 1, [1, 2]));

    for (const bytes of [byOnnxProto, byProtoc]) {
      const g = decodeModel(bytes).graph!;
      expect(attrInts(g.node![0]!, 'pads')).toEqual([1, 2, 3, 4]);
      expect(attrFloats(g.node![0]!, 'v')).toEqual([0.5, 2]);
      expect(g.initializer![0]!.dims!.map((d) => toNumber(d))).toEqual([1, 2]);
      expect(Buffer.from(encodeModel(decodeModel(bytes))).equals(Buffer.from(byProtoc))).toBe(true);
    }
  });
});
