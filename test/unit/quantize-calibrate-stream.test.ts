// Calibration streams: whatever the number of inputs, the calibrator holds one input's activations
// at a time and a fixed amount of statistics. Checked structurally (what it references), never by RSS.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { onnx } from '../../src/model/onnx.js';
import {
  type CalibrationMethod,
  type CalibrationSession,
  calibrate,
  calibrateSession,
  createSession,
  probeTensors,
  withExtraOutputs,
} from '../../src/model/quantize/calibrate.js';
import { copyForEdit } from '../../src/model/quantize/graph.js';
import { fetchGroups } from '../../src/model/quantize/index.js';
import { buildSmallCnn, SMALL_INPUT, SMALL_SIZE, smallInputs } from './quantize-fixtures.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const model = buildSmallCnn();
const tensors = (model.graph!.node ?? []).filter((n) => n.opType !== 'Softmax').map((n) => n.output![0]!);
const dims = [1, 3, SMALL_SIZE, SMALL_SIZE];
const opts = (method: CalibrationMethod) => ({ method, inputName: SMALL_INPUT, inputDims: dims, keepInputs: 2 });

/** Wraps a session and keeps a WeakRef to every activation array it hands out, by input. */
function tracking(session: ort.InferenceSession) {
  const handedOut: WeakRef<object>[][] = [];
  const wrapped: CalibrationSession = {
    inputNames: session.inputNames,
    run: (async (feeds: ort.InferenceSession.FeedsType, fetches: string[]) => {
      const out = await session.run(feeds, fetches);
      handedOut.push(Object.values(out).map((t) => new WeakRef((t as ort.Tensor).data as object)));
      return out;
    }) as CalibrationSession['run'],
  };
  return { wrapped, handedOut };
}

let session: ort.InferenceSession;
beforeAll(async () => {
  session = await createSession(withExtraOutputs(model, tensors));
});
afterAll(async () => {
  await session.release();
});

describe('streaming calibration', () => {
  for (const method of ['minmax', 'percentile', 'entropy'] as const) {
    it(`${method}: holds one input's activations at a time and statistics that do not grow with the inputs`, async () => {
      const few = await calibrateSession(session, tensors, smallInputs(2), opts(method));
      const many = await calibrateSession(session, tensors, smallInputs(12), opts(method));
      expect(many.inputs).toBe(12);
      for (const r of [few, many]) {
        expect(r.stats.maxActivationsHeld).toBe(tensors.length); // one run's fetches, never two inputs' worth
        expect(r.stats.activationsHeldAtEnd).toBe(0);
        expect(r.kept.length).toBe(2); // keepInputs, not every input
      }
      expect(many.stats.statisticValues).toBe(few.stats.statisticValues);
    });
  }

  it('drops every activation array once its input is done (nothing of the N inputs stays reachable)', async () => {
    const { wrapped, handedOut } = tracking(session);
    const result = await calibrateSession(wrapped, tensors, smallInputs(10), opts('percentile'));
    expect(result.inputs).toBe(10);
    expect(handedOut).toHaveLength(10);
    expect(handedOut.every((refs) => refs.length === tensors.length)).toBe(true);
    // WeakRef targets survive until the current job ends: let it end, then collect.
    await new Promise((resolve) => setImmediate(resolve));
    gc();
    await new Promise((resolve) => setImmediate(resolve));
    gc();
    const alive = handedOut.flat().filter((ref) => ref.deref() !== undefined).length;
    expect(alive).toBe(0);
    expect(result.ranges.size).toBe(tensors.length);
  });

  it('gives the same ranges on a session it creates as on one it is handed', async () => {
    const own = await calibrate(model, tensors, smallInputs(5), opts('entropy'));
    const handed = await calibrateSession(session, tensors, smallInputs(5), opts('entropy'));
    expect([...own.ranges]).toEqual([...handed.ranges]);
  });
});

describe('copies that share the weights', () => {
  it('withExtraOutputs adds outputs without copying nodes or weights, and leaves the model alone', () => {
    const before = model.graph!.output!.length;
    const copy = withExtraOutputs(model, [tensors[0]!, tensors[0]!]);
    expect(copy.graph!.output!.map((o) => o.name)).toEqual([...model.graph!.output!.map((o) => o.name), tensors[0]]);
    expect(model.graph!.output!.length).toBe(before);
    expect(copy.graph!.initializer![0]).toBe(model.graph!.initializer![0]);
    expect(copy.graph!.node![0]).toBe(model.graph!.node![0]);
  });

  it('copyForEdit copies the nodes and shares the initializers', () => {
    const copy = copyForEdit(model);
    copy.graph!.node![0]!.output = ['renamed'];
    copy.graph!.initializer!.pop();
    expect(model.graph!.node![0]!.output).not.toEqual(['renamed']);
    expect(copy.graph!.initializer!.length).toBe(model.graph!.initializer!.length - 1);
    expect(copy.graph!.initializer![0]).toBe(model.graph!.initializer![0]);
    expect(onnx.ModelProto.encode(copyForEdit(model)).finish()).toEqual(onnx.ModelProto.encode(model).finish());
  });

  it('probeTensors gives the types and shapes of a model whose weights ORT never holds', async () => {
    const info = await probeTensors(model);
    for (const t of tensors) expect(info.get(t)?.type).toBe('float32');
    expect(info.get(SMALL_INPUT)?.dims).toEqual(dims);
    // the weights, handed to ORT as inputs for the probe, are not reported as tensors of the model
    for (const init of model.graph!.initializer ?? []) expect(info.has(init.name!)).toBe(false);
  });
});

describe('per-layer SQNR fetch groups', () => {
  it('splits the tensors into groups under a byte budget, in order, a big or unknown one alone', () => {
    const size: Record<string, number> = { a: 4, b: 4, c: 10, d: 3, e: 3 };
    expect(fetchGroups(['a', 'b', 'c', 'd', 'e', 'x'], (n) => size[n], 8)).toEqual([['a', 'b'], ['c'], ['d', 'e'], ['x']]);
    expect(fetchGroups(['a', 'b'], (n) => size[n], 100)).toEqual([['a', 'b']]);
    expect(fetchGroups([], () => 1, 8)).toEqual([]);
  });
});
