import { describe, expect, it } from 'vitest';
import { mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  DataType,
  asFloat,
  asFloats,
  attrFloat,
  attrFloats,
  attrInt,
  attrInts,
  attrString,
  decodeModel,
  encodeModel,
  loadModel,
  makeModel,
  makeNode,
  makeTensor,
  makeValueInfo,
  onnx,
  opsetVersion,
  saveModel,
  tensorElementCount,
  tensorToFloat32,
  tensorToInt64,
  tensorToNumbers,
  valueInfoDims,
} from '../../src/model/onnx.js';

function tinyModel(): onnx.ModelProto {
  const w = makeTensor('w', DataType.FLOAT, [2], new Float32Array([1.5, -2.25]));
  const shape = makeTensor('shape', DataType.INT64, [2], new BigInt64Array([1n, -1n]));
  const node = makeNode('LeakyRelu', ['x'], ['y'], { alpha: asFloat(0.5) });
  return makeModel({
    graph: {
      name: 'g',
      node: [node],
      initializer: [w, shape],
      input: [makeValueInfo('x', DataType.FLOAT, ['N', 2])],
      output: [makeValueInfo('y', DataType.FLOAT, ['N', 2])],
    },
    opset: 13,
    extraOpsets: [{ domain: 'com.microsoft', version: 1 }],
  });
}

describe('onnx encode/decode', () => {
  it('round-trips a model with tensors, attributes and opsets', () => {
    const m = decodeModel(encodeModel(tinyModel()));
    expect(m).toBeInstanceOf(onnx.ModelProto);
    expect(opsetVersion(m)).toBe(13);
    expect(opsetVersion(m, 'com.microsoft')).toBe(1);
    expect(opsetVersion(m, 'nope')).toBeUndefined();
    const [w, shape] = m.graph!.initializer!;
    expect(Array.from(tensorToFloat32(w!))).toEqual([1.5, -2.25]);
    expect(Array.from(tensorToInt64(shape!))).toEqual([1n, -1n]);
    expect(tensorToNumbers(shape!)).toEqual([1, -1]);
    expect(attrFloat(m.graph!.node![0]!, 'alpha', 0)).toBe(0.5);
    expect(valueInfoDims(m.graph!.input![0]!)).toEqual(['N', 2]);
  });

  it('saves atomically and loads back, leaving no temp files', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'model-onnx-'));
    const file = path.join(dir, 'tiny.onnx');
    await saveModel(tinyModel(), file);
    const m = await loadModel(file);
    expect(m.graph!.node![0]!.opType).toBe('LeakyRelu');
    expect(await readdir(dir)).toEqual(['tiny.onnx']);
  });

  it('refuses garbage with a clear error naming the file', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'model-onnx-'));
    const file = path.join(dir, 'junk.onnx');
    await writeFile(file, Buffer.from('this is definitely not protobuf \xff\xff\xff\xff'));
    await expect(loadModel(file)).rejects.toThrow(/^not an ONNX model: .*junk\.onnx: /);
  });
});

describe('tensor helpers', () => {
  it('reads raw_data that starts at an unaligned byte offset', () => {
    const src = new Float32Array([3.5, -1, 7]);
    const backing = new Uint8Array(src.byteLength + 1);
    backing.set(new Uint8Array(src.buffer), 1);
    const t = onnx.TensorProto.create({ name: 't', dataType: DataType.FLOAT, dims: [3], rawData: backing.subarray(1) });
    expect(Array.from(tensorToFloat32(t))).toEqual([3.5, -1, 7]);
  });

  it('reads float_data and int32 shape tensors', () => {
    expect(Array.from(tensorToFloat32({ dataType: DataType.FLOAT, dims: [2], floatData: [0.25, 4] }))).toEqual([0.25, 4]);
    expect(tensorToNumbers({ dataType: DataType.INT32, dims: [3], int32Data: [1, 2, -3] })).toEqual([1, 2, -3]);
    expect(tensorToNumbers(makeTensor('i', DataType.INT32, [2], new Int32Array([5, -6])))).toEqual([5, -6]);
  });

  it('makes scalars and checks the value count against dims', () => {
    const s = makeTensor('s', DataType.INT8, [], new Int8Array([-7]));
    expect(s.dims).toEqual([]);
    expect(tensorElementCount([])).toBe(1);
    expect(new Int8Array(s.rawData.buffer, s.rawData.byteOffset, 1)[0]).toBe(-7);
    expect(() => makeTensor('x', DataType.FLOAT, [2, 2], new Float32Array(3))).toThrow(/3 values for dims \[2,2\]/);
    expect(() => makeTensor('x', DataType.FLOAT, [1], new Int8Array(1))).toThrow(/does not match FLOAT/);
  });

  it('refuses to read a tensor of the wrong type', () => {
    expect(() => tensorToFloat32(makeTensor('q', DataType.INT8, [1], new Int8Array(1)))).toThrow(/q: expected FLOAT/);
  });
});

describe('attributes', () => {
  it('keeps ints and floats apart', () => {
    const n = makeNode('X', ['a'], ['b'], {
      axis: 1,
      pads: [1, 1, 1, 1],
      alpha: asFloat(1),
      scales: asFloats([0.5, 2]),
      mode: 'constant',
    });
    const byName = Object.fromEntries(n.attribute.map((a) => [a.name, a.type]));
    expect(byName).toEqual({
      axis: onnx.AttributeProto.AttributeType.INT,
      pads: onnx.AttributeProto.AttributeType.INTS,
      alpha: onnx.AttributeProto.AttributeType.FLOAT,
      scales: onnx.AttributeProto.AttributeType.FLOATS,
      mode: onnx.AttributeProto.AttributeType.STRING,
    });
    const d = onnx.NodeProto.decode(onnx.NodeProto.encode(n).finish());
    expect(attrInt(d, 'axis', 0)).toBe(1);
    expect(attrInts(d, 'pads')).toEqual([1, 1, 1, 1]);
    expect(attrFloat(d, 'alpha', 0)).toBe(1);
    expect(attrFloats(d, 'scales')).toEqual([0.5, 2]);
    expect(attrString(d, 'mode', '')).toBe('constant');
    expect(attrInt(d, 'missing', 42)).toBe(42);
  });

  it('rejects a bare non-integer number', () => {
    expect(() => makeNode('LeakyRelu', ['x'], ['y'], { alpha: 0.5 })).toThrow(/alpha: 0.5 is not an integer; wrap floats with asFloat/);
  });
});
