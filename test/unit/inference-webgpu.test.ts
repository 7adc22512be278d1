/**
 * The WebGPU provider of the stock binding, through the engine: placement, provider options, CPU
 * fallback and the EP context cache. Needs a Vulkan driver WebGPU accepts (a GPU, or Mesa >= 24
 * lavapipe, which .ci/run installs); skipped with that reason where there is none.
 */
import { createHash } from 'node:crypto';
import { copyFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { InferenceEngine, type SessionSettings } from '../../src/inference/index.js';
import { epContextFile } from '../../src/inference/session-cache.js';
import { onnx } from '../../src/model/onnx.js';
import { seededInput, testSessionSettings, writeTinyModel } from '../helpers/tiny-model.js';
import { SKIP, webGpuStatus } from '../helpers/tools.js';

const logger = pino({ level: 'silent' });
let work: string;
let fp32: string;
let qdq: string;

function settings(over: Partial<SessionSettings> = {}): SessionSettings {
  return testSessionSettings(fp32, { executionProviders: ['webgpu', 'cpu'], ...over });
}

/** x[1,8] → QuantizeLinear → DequantizeLinear → Relu → y: WebGPU has no QuantizeLinear kernel. */
async function writeQdqModel(file: string): Promise<string> {
  const scalar = (name: string, dataType: number, values: number[]): onnx.ITensorProto =>
    dataType === onnx.TensorProto.DataType.FLOAT
      ? { name, dataType, dims: [], floatData: values }
      : { name, dataType, dims: [], int32Data: values };
  const model = onnx.ModelProto.create({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'qdq',
      input: [
        {
          name: 'x',
          type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape: { dim: [{ dimValue: 1 }, { dimValue: 8 }] } } },
        },
      ],
      output: [
        {
          name: 'y',
          type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape: { dim: [{ dimValue: 1 }, { dimValue: 8 }] } } },
        },
      ],
      initializer: [scalar('s', onnx.TensorProto.DataType.FLOAT, [0.05]), scalar('z', onnx.TensorProto.DataType.UINT8, [128])],
      node: [
        { opType: 'QuantizeLinear', input: ['x', 's', 'z'], output: ['q'], name: 'quantize' },
        { opType: 'DequantizeLinear', input: ['q', 's', 'z'], output: ['dq'], name: 'dequantize' },
        { opType: 'Relu', input: ['dq'], output: ['y'], name: 'relu' },
      ],
    },
  });
  await writeFile(file, onnx.ModelProto.encode(model).finish());
  return file;
}

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'inceptiond-webgpu-'));
  fp32 = await writeTinyModel({ size: 8, classes: 10, seed: 3 }, work);
  qdq = await writeQdqModel(path.join(work, 'qdq.onnx'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});
beforeEach(async (ctx) => {
  const status = await webGpuStatus();
  ctx.skip(!status.compiled, SKIP.webgpuBuild);
  ctx.skip(!status.usable, `${SKIP.webgpu}: ${status.reason}`);
});

async function scores(s: SessionSettings, input: Float32Array, dims: number[]): Promise<{ provider: string; values: number[] }> {
  const engine = await InferenceEngine.create(s, logger);
  try {
    return { provider: engine.provider, values: Array.from((await engine.run({ data: input.slice(), dims })).scores) };
  } finally {
    await engine.close();
  }
}

describe('WebGPU provider', () => {
  it('runs a float model entirely on WebGPU, equal to the CPU within 1e-5', async () => {
    const engine = await InferenceEngine.create(settings(), logger);
    try {
      expect(engine.provider).toBe('webgpu');
      expect(Object.keys(engine.info.placement!.nodes)).toEqual(['webgpu']);
      expect(engine.info.placement!.copies).toBe(0);
    } finally {
      await engine.close();
    }
    const input = seededInput(8);
    const gpu = await scores(settings(), input, [1, 3, 8, 8]);
    const cpu = await scores(settings({ executionProviders: ['cpu'] }), input, [1, 3, 8, 8]);
    expect(gpu.provider).toBe('webgpu');
    const maxDiff = Math.max(...gpu.values.map((v, i) => Math.abs(v - cpu.values[i]!)));
    expect(maxDiff).toBeLessThan(1e-5);
  });

  it('reports the nodes it leaves to the CPU: QuantizeLinear of a QDQ model, with the copies it costs', async () => {
    const engine = await InferenceEngine.create(settings({ modelPath: qdq }), logger);
    try {
      expect(engine.provider).toBe('webgpu');
      const p = engine.info.placement!;
      expect(p.nodes.cpu).toBe(1);
      expect(p.nodes.webgpu).toBeGreaterThanOrEqual(2);
      expect(p.cpuOps).toEqual({ QuantizeLinear: 1 });
      expect(p.copies).toBeGreaterThanOrEqual(1); // its output goes to the GPU (graph inputs and outputs are not counted)
    } finally {
      await engine.close();
    }
  });

  it('with cpuFallback false refuses that split graph and uses the next provider, saying why', async () => {
    const engine = await InferenceEngine.create(settings({ modelPath: qdq, cpuFallback: false }), logger);
    try {
      expect(engine.provider).toBe('cpu');
      expect(engine.attempts[0]).toMatchObject({
        provider: 'webgpu',
        ok: false,
        reason: expect.stringMatching(/fallback to CPU EP has been explicitly disabled/),
      });
    } finally {
      await engine.close();
    }
  });

  it('passes provider options to ONNX Runtime: forceCpuNodeNames moves a node; an unknown option is refused with its name', async () => {
    const forced = await InferenceEngine.create(settings({ providerOptions: { webgpu: { forceCpuNodeNames: ['pool'] } } }), logger);
    try {
      expect(forced.provider).toBe('webgpu');
      expect(forced.info.placement!.cpuOps).toMatchObject({ GlobalAveragePool: 1 });
    } finally {
      await forced.close();
    }
    const bad = await InferenceEngine.create(settings({ providerOptions: { webgpu: { bogusOption: 'x' } } }), logger);
    try {
      expect(bad.provider).toBe('cpu');
      expect(bad.attempts[0]!.reason).toMatch(/unrecognized option: 'bogusOption'/);
    } finally {
      await bad.close();
    }
  });

  it('loads a compiled graph from the EP context cache when one is there for this model; WebGPU itself writes none', async () => {
    const dir = path.join(work, 'ep-cache');
    const s = settings({ epContextCacheDir: dir });
    const fresh = await InferenceEngine.create(s, logger);
    await fresh.close();
    expect(fresh.info.fromCache).toBe(false);
    expect(await readdir(dir)).toEqual([]); // WebGPU compiles nothing ahead of time

    // A compiling provider (QNN …) would have written this file; any loadable model stands in for it.
    const sha = createHash('sha256')
      .update(await readFile(fp32))
      .digest('hex');
    const cached = epContextFile(dir, s, 'webgpu', sha, fresh.info.runtime.version);
    await copyFile(fp32, cached);
    const warm = await InferenceEngine.create(s, logger);
    try {
      expect(warm.info.fromCache).toBe(true);
      expect(warm.provider).toBe('webgpu');
      await expect(warm.run({ data: seededInput(8), dims: [1, 3, 8, 8] })).resolves.toBeDefined();
    } finally {
      await warm.close();
    }
    // Other provider options are another key: that file is not used for them.
    const other = await InferenceEngine.create({ ...s, providerOptions: { webgpu: { preferredLayout: 'NCHW' } } }, logger);
    await other.close();
    expect(other.info.fromCache).toBe(false);
  });
});
