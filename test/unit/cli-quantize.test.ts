// `inceptiond model quantize` and `model eval` through the real compiled CLI (dist/cli.js, built by the
// global setup when stale), on the built Inception V2 from the shared test model cache and on a small CNN.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { projectRoot } from '../../src/config/index.js';
import { BUILT_MODEL_FILE } from '../../src/daemon/model-setup.js';
import { loadModel, saveModel, writeManifestBeside, type ModelManifest } from '../../src/model/index.js';
import { buildSmallCnn, SMALL_INPUT, SMALL_SIZE, writeImages } from './quantize-fixtures.js';

const run = promisify(execFile);
const cli = path.join(projectRoot, 'dist', 'cli.js');
// The child must not pick up this machine's INCEPTIOND_* settings.
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('INCEPTIOND_')));

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

async function inceptiond(...args: string[]): Promise<Outcome> {
  try {
    const { stdout, stderr } = await run(process.execPath, [cli, ...args], { cwd: projectRoot, env, maxBuffer: 64 << 20 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    if (typeof e.code !== 'number') throw err;
    return { code: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** An expected error: one `inceptiond: …` line, no stack trace. */
function expectCleanError(o: Outcome, code: number, pattern: RegExp): void {
  expect(o.code, o.stderr).toBe(code);
  expect(o.stderr).toMatch(pattern);
  expect(o.stderr).not.toMatch(/^\s+at /m);
}

let dir: string;
let images: string;
let builtFp32: string;
let small: string;
let smallImages: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'cli-quantize-'));
  // The FP32 Inception V2 the global setup built into the shared cache (read only here).
  builtFp32 = path.join(inject('modelCacheDir'), BUILT_MODEL_FILE);
  // The 8 bundled samples: calibrating and evaluating on only 2–3 of them gives too noisy an SQNR to bound.
  images = path.join(projectRoot, 'models', 'samples');

  small = path.join(dir, 'small', 'small.onnx');
  await mkdir(path.dirname(small), { recursive: true });
  await saveModel(buildSmallCnn({ seed: 6 }), small);
  const manifest: ModelManifest = {
    name: 'small-cnn',
    file: 'small.onnx',
    input: {
      name: SMALL_INPUT,
      layout: 'NCHW',
      width: SMALL_SIZE,
      height: SMALL_SIZE,
      channels: 'RGB',
      scale: 1,
      mean: [0, 0, 0],
      std: [1, 1, 1],
      resize: 'fill',
    },
    output: { name: 'prob', activation: 'softmax' },
  };
  await writeManifestBeside(small, manifest);
  smallImages = path.join(dir, 'small-images');
  await mkdir(smallImages);
  await writeImages(smallImages, 3, 11, 48);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('inceptiond model quantize / model eval on the built Inception V2', () => {
  const int8 = () => path.join(dir, 'out', 'ib.int8.onnx');

  it('quantize --json writes OUT and OUT.json with precision int8 and reports what it did', async () => {
    const o = await inceptiond('model', 'quantize', builtFp32, int8(), '--calibration', images, '--json');
    expect(o.code, o.stderr).toBe(0);
    const report = JSON.parse(o.stdout) as {
      output: string;
      manifest: string;
      method: string;
      percentile: number;
      activationType: string;
      calibrationImages: number;
      skippedImages: unknown[];
      sizeBytes: { before: number; after: number };
      worstLayers: { sqnrDb: number }[];
      heldOut?: unknown;
    };
    expect(report.method).toBe('percentile');
    expect(report.percentile).toBe(99.999);
    expect(report.activationType).toBe('uint8');
    // 8 samples: fewer than 20, so none is held out (each counts for the ranges) and there is no figure.
    expect(report.calibrationImages).toBe(8);
    expect(report.heldOut).toBeUndefined();
    expect(report.skippedImages).toEqual([]);
    expect(report.sizeBytes.after).toBeLessThan(report.sizeBytes.before / 3);
    expect(report.worstLayers.length).toBeGreaterThan(0);
    expect(report.manifest).toBe(path.resolve(`${int8()}.json`));
    const manifest = JSON.parse(await readFile(`${int8()}.json`, 'utf8')) as ModelManifest;
    expect(manifest.precision).toBe('int8');
    expect(manifest.file).toBe('ib.int8.onnx');
    expect((await stat(int8())).size).toBe(report.sizeBytes.after);
    const ops = new Set((await loadModel(int8())).graph!.node!.map((n) => n.opType));
    expect(ops.has('QuantizeLinear') && ops.has('DequantizeLinear')).toBe(true);
  });

  it('eval --json prints exactly the seven keys with values in range', async () => {
    const o = await inceptiond('model', 'eval', builtFp32, int8(), '--images', images, '--json', '--repeats', '1');
    expect(o.code, o.stderr).toBe(0);
    const r = JSON.parse(o.stdout) as Record<string, number>;
    expect(Object.keys(r).sort()).toEqual(['candMs', 'images', 'latencyRatio', 'refMs', 'sqnrDb', 'top1Agreement', 'top5Agreement']);
    expect(r.images).toBe(8);
    for (const k of ['top1Agreement', 'top5Agreement'] as const) {
      expect(r[k]).toBeGreaterThanOrEqual(0);
      expect(r[k]).toBeLessThanOrEqual(1);
    }
    expect(r.top5Agreement).toBeGreaterThanOrEqual(r.top1Agreement!);
    // Uncorrelated outputs of equal power give about -3 dB, a scale off by 2× about 0 dB; the built
    // model's INT8 output measures 7.8 dB on the samples (synthetic weights; a trained model gets 30+).
    // Its synthetic weights amplify how ORT's fused kernels round: 13.9 dB before the avg pools became
    // depthwise convs, 6.5 and 6.7 dB for both through the unfused QDQ ops, and within 0.4 dB of each
    // other on 263 photographs (README, "Quantizing to INT8").
    expect(r.sqnrDb).toBeGreaterThan(5);
    expect(r.sqnrDb).toBeLessThan(100);
    expect(r.refMs).toBeGreaterThan(0);
    expect(r.candMs).toBeGreaterThan(0);
    expect(r.latencyRatio).toBeCloseTo(r.candMs! / r.refMs!, 10);
  });
});

describe('inceptiond model quantize (small CNN)', () => {
  it('prints a human report: rewrites, images used/skipped, size before → after, worst layers', async () => {
    const out = path.join(dir, 'small-human.int8.onnx');
    await writeFile(path.join(smallImages, 'broken.jpg'), Buffer.from([0xff, 0xd8, 0xff, 0x00]));
    try {
      const o = await inceptiond('model', 'quantize', small, out, '--calibration', smallImages, '--method', 'minmax');
      expect(o.code, o.stderr).toBe(0);
      expect(o.stdout).toContain(`wrote ${out} (INT8 QDQ: minmax calibration, uint8 activations`);
      expect(o.stdout).toContain(`wrote ${out}.json (precision int8)`);
      expect(o.stdout).toMatch(/rewrites:\n {2}\d+ BatchNormalization folded into Conv/);
      expect(o.stdout).toMatch(/calibration images: 3 used, 1 skipped\n {2}skipped .*broken\.jpg: /);
      expect(o.stdout).toContain('held out: none (give --eval-images, or at least 20 calibration images)');
      expect(o.stdout).toMatch(/size: [\d.]+ kB → [\d.]+ kB \([\d.]+×\)/);
      expect(o.stdout).toMatch(/worst layers by SQNR .*:\n\s+-?[\d.]+\s+\S+\s+\S+/);
    } finally {
      await rm(path.join(smallImages, 'broken.jpg'), { force: true });
    }
  });

  it('--from-source captures N frames from the configured source into the calibration folder, then quantizes', async () => {
    const cal = path.join(dir, 'captured');
    const config = path.join(dir, 'files-source.json');
    await writeFile(
      config,
      JSON.stringify({ stateDir: path.join(dir, 'state'), capture: { backend: 'files', files: { path: smallImages, loop: true } } }),
    );
    const out = path.join(dir, 'small-src.int8.onnx');
    const o = await inceptiond('model', 'quantize', small, out, '--calibration', cal, '--from-source', '5', '-c', config, '--json');
    expect(o.code, o.stderr).toBe(0);
    expect((await readdir(cal)).sort()).toEqual(['frame-0001.jpg', 'frame-0002.jpg', 'frame-0003.jpg', 'frame-0004.jpg', 'frame-0005.jpg']);
    const report = JSON.parse(o.stdout) as { calibrationImages: number; captured: { files: string[]; source: string } };
    expect(report.calibrationImages).toBe(5);
    expect(report.captured.source).toBe('camera');
    expect(JSON.parse(await readFile(`${out}.json`, 'utf8')).precision).toBe('int8');
  });

  it('--adaround [ITERATIONS]: the JSON report says what it did per layer, the human report in one line; 0 exits 2', async () => {
    const out = path.join(dir, 'small-adaround.int8.onnx');
    const o = await inceptiond(
      'model',
      'quantize',
      small,
      out,
      '--calibration',
      smallImages,
      '--adaround',
      '20',
      '--bias-correction',
      '--json',
    );
    expect(o.code, o.stderr).toBe(0);
    const report = JSON.parse(o.stdout) as {
      adaround: { layers: number; iterations: number; images: number; durationMs: number; peakMemory: number; perLayer: object[] };
      biasCorrection: { layers: number };
    };
    expect(report.adaround).toMatchObject({ iterations: 20, images: 3 });
    expect(report.adaround.layers).toBe(report.biasCorrection.layers);
    expect(report.adaround.perLayer).toHaveLength(report.adaround.layers);
    expect(report.adaround.perLayer[0]).toEqual({
      node: expect.any(String),
      initialMse: expect.any(Number),
      finalMse: expect.any(Number),
      changed: expect.any(Number),
      weights: expect.any(Number),
      optimizationMs: expect.any(Number),
    });
    expect(report.adaround.peakMemory).toBeGreaterThan(0);
    const human = await inceptiond('model', 'quantize', small, out, '--calibration', smallImages, '--adaround', '20');
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(/AdaRound: \d+ layers, 20 steps each on 3 images, [\d.]+ s, layer output MSE \d+ % of round-to-nearest's/);
    expect(human.stderr).not.toContain('AdaRound ['); // no progress bar off a terminal
    expectCleanError(
      await inceptiond('model', 'quantize', small, out, '--calibration', smallImages, '--adaround', '0'),
      2,
      /positive integer/,
    );
  });

  it('an empty calibration folder exits 1 naming the folder', async () => {
    const empty = path.join(dir, 'empty-folder');
    await mkdir(empty);
    const o = await inceptiond('model', 'quantize', small, path.join(dir, 'x.onnx'), '--calibration', empty);
    expectCleanError(o, 1, new RegExp(`calibration folder ${empty} has no images`));
    await expect(stat(path.join(dir, 'x.onnx'))).rejects.toThrow();
  });

  it('a file that is not ONNX exits 1 saying so', async () => {
    const bogus = path.join(dir, 'bogus.onnx');
    await writeFile(bogus, 'this is not a protobuf');
    const o = await inceptiond('model', 'quantize', bogus, path.join(dir, 'x.onnx'), '--calibration', smallImages);
    expectCleanError(o, 1, new RegExp(`not an ONNX model: ${bogus}`));
    const e = await inceptiond('model', 'eval', small, bogus, '--images', smallImages);
    expectCleanError(e, 1, new RegExp(`cannot load model ${bogus}`));
  });

  it('a missing model or calibration folder exits 1; bad options exit 2', async () => {
    const noImages = path.join(dir, 'no-images');
    await mkdir(noImages, { recursive: true });
    expectCleanError(
      await inceptiond('model', 'quantize', path.join(dir, 'nope.onnx'), path.join(dir, 'x.onnx'), '--calibration', smallImages),
      1,
      /model file not found: .*nope\.onnx/,
    );
    expectCleanError(
      await inceptiond('model', 'quantize', small, path.join(dir, 'x.onnx'), '--calibration', path.join(dir, 'missing')),
      1,
      /calibration folder .*missing does not exist/,
    );
    expectCleanError(
      await inceptiond('model', 'quantize', small, path.join(dir, 'x.onnx'), '--calibration', smallImages, '--method', 'kl'),
      2,
      /--method/,
    );
    expectCleanError(
      await inceptiond('model', 'quantize', small, path.join(dir, 'x.onnx'), '--calibration', smallImages, '--percentile', '120'),
      2,
      /--percentile/,
    );
    expectCleanError(await inceptiond('model', 'quantize', small, path.join(dir, 'x.onnx')), 2, /--calibration/);
    expectCleanError(await inceptiond('model', 'eval', small, small, '--images', noImages), 1, /image folder .*no-images has no images/);
  });
});

describe('inceptiond model quantize --target-sqnr (small CNN)', () => {
  it('--json reports the mixed-precision steps; the human report prints them; a bad value or a bound without a target exits 2', async () => {
    const out = path.join(dir, 'small-mixed.int8.onnx');
    const o = await inceptiond('model', 'quantize', small, out, '--calibration', smallImages, '--target-sqnr', '200', '--json');
    expect(o.code, o.stderr).toBe(0);
    const mp = (JSON.parse(o.stdout) as { mixedPrecision: Record<string, unknown> & { steps: Record<string, unknown>[] } }).mixedPrecision;
    expect(mp).toMatchObject({ targetSqnrDb: 200, reached: false, images: { source: 'calibration', count: 3 } });
    expect(Array.isArray(mp.kept)).toBe(true);
    expect(typeof mp.durationMs).toBe('number');
    expect(mp.steps.length).toBeGreaterThanOrEqual(1);
    for (const s of mp.steps) expect(Object.keys(s)).toEqual(expect.arrayContaining(['layers', 'sqnrDb', 'top1Agreement', 'latencyRatio']));

    const h = await inceptiond('model', 'quantize', small, out, '--calibration', smallImages, '--target-sqnr', '200');
    expect(h.code, h.stderr).toBe(0);
    expect(h.stdout).toMatch(/mixed precision: target 200 dB NOT reached, measured on 3 calibration images/);
    expect(h.stdout).toMatch(/\n {5}0 {2}-?[\d.]+ dB .* none \(all INT8\)\n/);
    expect(h.stdout).toMatch(/INT8 weights with float activations: [\d.]+ dB, .*activation precision alone will not reach it/);

    expectCleanError(await inceptiond('model', 'quantize', small, out, '--calibration', smallImages, '--target-sqnr', 'high'), 2, /dB/);
    expectCleanError(
      await inceptiond('model', 'quantize', small, out, '--calibration', smallImages, '--max-latency-ratio', '0.4'),
      2,
      /--max-latency-ratio .*needs --target-sqnr/,
    );
    expectCleanError(
      await inceptiond('model', 'quantize', small, out, '--calibration', smallImages, '--target-sqnr', '30', '--max-latency-ratio', '0'),
      2,
      /ratio > 0, got "0"/,
    );
    expectCleanError(
      await inceptiond('model', 'quantize', small, out, '--calibration', smallImages, '--search-images', '2'),
      2,
      /--search-images .*needs --target-sqnr/,
    );
  });

  it('--adaround-images sets how many calibration images AdaRound learns on; without --adaround it exits 2', async () => {
    const out = path.join(dir, 'small-adaround-2.int8.onnx');
    const o = await inceptiond(
      'model',
      'quantize',
      small,
      out,
      '--calibration',
      smallImages,
      '--adaround',
      '5',
      '--adaround-images',
      '2',
      '--json',
    );
    expect(o.code, o.stderr).toBe(0);
    expect((JSON.parse(o.stdout) as { adaround: unknown }).adaround).toMatchObject({ iterations: 5, images: 2 });
    expectCleanError(
      await inceptiond('model', 'quantize', small, out, '--calibration', smallImages, '--adaround-images', '2'),
      2,
      /needs --adaround/,
    );
  });

  it('--search-images, --sensitivity-images and --max-steps size the search; without --target-sqnr they exit 2', async () => {
    const out = path.join(dir, 'small-mixed-2.int8.onnx');
    const args = ['--calibration', smallImages, '--target-sqnr', '200', '--search-images', '2', '--json'];
    const o = await inceptiond('model', 'quantize', small, out, ...args);
    expect(o.code, o.stderr).toBe(0);
    const mp = (JSON.parse(o.stdout) as { mixedPrecision: { steps: unknown[] } }).mixedPrecision;
    expect(mp).toMatchObject({ images: { source: 'calibration', count: 2, sensitivity: 2 } });
    // the unreachable target makes the search try every candidate it may: more than one step here
    expect(mp.steps.length).toBeGreaterThan(2);
    const bounded = await inceptiond('model', 'quantize', small, out, ...args, '--sensitivity-images', '1', '--max-steps', '1');
    expect(bounded.code, bounded.stderr).toBe(0);
    const mp1 = (JSON.parse(bounded.stdout) as { mixedPrecision: { steps: unknown[] } }).mixedPrecision;
    expect(mp1).toMatchObject({ images: { count: 2, sensitivity: 1 } });
    expect(mp1.steps).toHaveLength(2); // the all-INT8 model and the one step allowed
    for (const option of ['--sensitivity-images', '--max-steps']) {
      expectCleanError(
        await inceptiond('model', 'quantize', small, out, '--calibration', smallImages, option, '1'),
        2,
        new RegExp(`${option} .*needs --target-sqnr`),
      );
    }
  });

  it('--target-sqnr with --adaround, --bias-correction and --max-latency-ratio: the bound is reported, every step over it undone', async () => {
    const out = path.join(dir, 'small-mixed-bounded.int8.onnx');
    const args = ['--calibration', smallImages, '--target-sqnr', '200', '--max-latency-ratio', '0.000001'];
    const o = await inceptiond('model', 'quantize', small, out, ...args, '--adaround', '5', '--bias-correction', '2', '--json');
    expect(o.code, o.stderr).toBe(0);
    const r = JSON.parse(o.stdout) as {
      adaround: unknown;
      biasCorrection: unknown;
      mixedPrecision: { maxLatencyRatio: number; kept: string[]; steps: { accepted: boolean; rejected?: string }[] };
    };
    expect(r.adaround).toBeDefined();
    expect(r.biasCorrection).toBeDefined();
    expect(r.mixedPrecision.maxLatencyRatio).toBe(0.000001);
    expect(r.mixedPrecision.kept).toEqual([]);
    for (const s of r.mixedPrecision.steps.slice(1)) expect(s.accepted).toBe(false);
    const h = await inceptiond('model', 'quantize', small, out, ...args);
    expect(h.code, h.stderr).toBe(0);
    expect(h.stdout).toMatch(/target 200 dB NOT reached within 0.000001 × FP32 latency/);
  });
});

describe('inceptiond model quantize --target', () => {
  it('--help lists --target with one line per preset, the same lines as the quantizer', async () => {
    const { targetHelpLines, TARGET_NAMES, TARGET_ALIASES } = await import('../../src/model/quantize/targets.js');
    const o = await inceptiond('model', 'quantize', '--help');
    expect(o.code, o.stderr).toBe(0);
    expect(o.stdout).toMatch(/--target <preset>/);
    expect(o.stdout).toContain('Targets (--target):');
    for (const line of targetHelpLines()) expect(o.stdout).toContain(`  ${line}\n`);
    const choices = /--target <preset>[\s\S]*?\(choices: ([^)]*)/.exec(o.stdout)![1]!.replace(/\s+/g, ' ');
    for (const t of [...TARGET_NAMES, ...Object.keys(TARGET_ALIASES)]) expect(choices).toContain(`"${t}"`);
    expect(o.stdout).toContain('default: "cpu"');
    // --method lists each calibration method once
    const { CALIBRATION_METHODS } = await import('../../src/config/index.js');
    const methods = /--method <method>[\s\S]*?\(choices:\s*([^)]*?),\s*default/.exec(o.stdout)![1]!.replace(/\s+/g, ' ');
    expect(methods.match(/"[a-z]+"/g)).toEqual(CALIBRATION_METHODS.map((m) => `"${m}"`));
  });

  it('--target qnn-htp --json: the report and OUT.json record the target and its settings', async () => {
    const out = path.join(dir, 'small-qnn.int8.onnx');
    const o = await inceptiond(
      'model',
      'quantize',
      small,
      out,
      '--calibration',
      smallImages,
      '--target',
      'qnn-htp',
      '--method',
      'minmax',
      '--json',
    );
    expect(o.code, o.stderr).toBe(0);
    const report = JSON.parse(o.stdout) as { target: string; activationType: string; settings: Record<string, unknown> };
    expect(report.target).toBe('qnn-htp');
    expect(report.activationType).toBe('uint8');
    expect(report.settings).toMatchObject({
      weights: { type: 'uint8', symmetric: false, perChannel: false },
      minRealRange: 1e-4,
      quantizeSoftmax: true,
      keepActivations: false,
    });
    const manifest = JSON.parse(await readFile(`${out}.json`, 'utf8')) as ModelManifest & { quantization: Record<string, unknown> };
    expect(manifest.precision).toBe('int8');
    expect(manifest.quantization).toMatchObject({ target: 'qnn-htp', activationType: 'uint8', method: 'minmax', quantizeSoftmax: true });
    expect(manifest.notes).toMatch(/for qnn-htp of small\.onnx/);
    const ops = (await loadModel(out)).graph!.node!;
    const softmax = ops.find((n) => n.opType === 'Softmax')!;
    expect(ops.find((n) => n.input?.includes(softmax.output![0]!))?.opType).toBe('QuantizeLinear');
  });

  it('the default target is recorded as cpu; cpu-x86 is the same target; --no-per-channel gives per-tensor weights', async () => {
    const out = path.join(dir, 'small-x86.int8.onnx');
    const o = await inceptiond(
      'model',
      'quantize',
      small,
      out,
      '--calibration',
      smallImages,
      '--target',
      'cpu-x86',
      '--no-per-channel',
      '--json',
    );
    expect(o.code, o.stderr).toBe(0);
    const report = JSON.parse(o.stdout) as { target: string; settings: { weights: { perChannel: boolean } } };
    expect(report.target).toBe('cpu');
    expect(report.settings.weights.perChannel).toBe(false);
    const d = path.join(dir, 'small-default.int8.onnx');
    expect((await inceptiond('model', 'quantize', small, d, '--calibration', smallImages, '--json')).code).toBe(0);
    expect(JSON.parse(await readFile(`${d}.json`, 'utf8')).quantization).toMatchObject({ target: 'cpu', weights: { perChannel: true } });
  });

  it('a human report names a non-default target and what it changed', async () => {
    const out = path.join(dir, 'small-vsi.int8.onnx');
    const o = await inceptiond('model', 'quantize', small, out, '--calibration', smallImages, '--target', 'vsinpu', '--keep-activations');
    expect(o.code, o.stderr).toBe(0);
    expect(o.stdout).toContain(
      `wrote ${out} (INT8 QDQ: percentile 99.999 calibration, uint8 activations, per-tensor asymmetric uint8 weights)`,
    );
    expect(o.stdout).toContain('target: vsinpu (Softmax quantized over [0, 1]; Relu/Clip kept as quantized node units)');
  });

  it('a combination the target cannot run exits 2 saying why, before any work', async () => {
    const out = path.join(dir, 'never.onnx');
    const q = (...args: string[]) => inceptiond('model', 'quantize', small, out, '--calibration', smallImages, ...args);
    expectCleanError(
      await q('--target', 'acl', '--per-channel'),
      2,
      /--target acl cannot take per-channel weights: ACL does not support per-channel quantization/,
    );
    expectCleanError(
      await q('--target', 'qnn-htp', '--activation-type', 'int8'),
      2,
      /--target qnn-htp takes uint8 or uint16 activations, not int8/,
    );
    expectCleanError(
      await q('--target', 'vsinpu', '--activation-type', 'uint16'),
      2,
      /--target vsinpu takes uint8 or int8 activations, not uint16/,
    );
    expectCleanError(await q('--target', 'xnnpack', '--activation-type', 'uint8', '--per-channel'), 2, /no per-channel kernels for uint8/);
    expectCleanError(await q('--target', 'gpu'), 2, /--target/);
    await expect(stat(out)).rejects.toThrow();
  });
});
