/**
 * The daemon as linux-arm64 (the official Node arm64 binary, onnxruntime-node's and sharp's arm64
 * binaries) under qemu-user on this x86-64 machine, each step compared with the same step run natively:
 * model build, INT8 quantization, classification in FP32 and INT8, and a daemon run against a real broker.
 * Toolchain and arm64 project copy: see global-setup.ts and scripts/arm64/.
 */
import { unitEnvironment } from '../helpers/systemd-unit.js';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { validateResult, type ResultPayload } from '../../src/publish/index.js';
import { runArm64 } from '../../scripts/arm64/toolchain.mjs';
import { collect, startBroker, type Collector, type TestBroker } from '../helpers/broker.js';
import {
  armCli,
  cleanEnv,
  compare,
  formatComparison,
  median,
  ok,
  parseClassify,
  root,
  sha256File,
  startArm64Daemon,
  x86Cli,
  type Arm64Daemon,
  type Classified,
} from './helpers.js';

// Under any other vitest config (no arm64 global setup) the suite is skipped.
const ctx = inject('arm64');

/*
 * Tolerances on |score(arm64) − score(x86)| for the softmax outputs, all 1000 classes of every sample.
 * The input tensors are bit-identical on both sides (checked below), so all of the difference is ORT's
 * kernels: MLAS's NEON paths vs the host's AVX2/AVX-512 ones sum in another order.
 * FP32: measured max 3.4e-6 over the 8 samples (top-1 scores 0.08-1.0); 1e-4 leaves a 30x margin and is
 * still far below any gap that could reorder a label that matters.
 * INT8: measured max 1.2e-7 (x86 with AVX512-VNNI vs Neoverse-N1 with sdot): the integer sums agree and
 * only float rounding of the dequantized values and the softmax differs. 1e-5 is an 80x margin over that
 * noise; more than that means the integer paths disagree, which is worth hearing about.
 */
const FP32_TOLERANCE = 1e-4;
const INT8_TOLERANCE = 1e-5;
/*
 * Calibration ranges come from 2048-bin histograms of FP32 activations; the arm64 and x86 activations
 * differ by ~1e-6 relative, so a percentile cut can move by at most about one bin: a relative scale
 * difference up to 2/2048 (two bins) is accepted, zero points within 1. Measured: 92 of 94 scales
 * identical, the other two 6.7e-8 apart (2 calibration images).
 */
const SCALE_REL_TOLERANCE = 2 / 2048;
/*
 * Per-test timeouts: about 4x what each took on 2 cores shared with another test run (build 124 s,
 * quantize + its classify runs 130 s, FP32 + INT8 classify 167 s; on idle cores 67 s, 63 s, 73 s).
 */
/** Images the arm64 quantization calibrates on: each one is a full FP32 run with every activation kept. */
const QUANTIZE_IMAGES = 2;

const SAMPLES = path.join(root, 'models', 'samples');
const images = readdirSync(SAMPLES)
  .filter((f) => /\.jpe?g$/i.test(f))
  .sort()
  .map((f) => path.join(SAMPLES, f));

const note = (line: string) => process.stdout.write(`[arm64] ${line}\n`);
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

interface QuantizeReport {
  tensors: { tensor: string; scale: number; zeroPoint: number; min: number; max: number }[];
  calibrationImages: number;
}

describe.skipIf(!ctx)('linux-arm64 under qemu-user', () => {
  it('has the toolchain: qemu-user, arm64 sysroot and node, the arm64 project copy, a binfmt_misc namespace', () => {
    if (ctx?.error !== undefined) {
      const err = new Error(ctx.error);
      err.stack = ctx.error;
      throw err;
    }
    expect(ctx?.probe.arch).toBe('arm64');
  });
});

const ready = ctx && ctx.error === undefined ? ctx : undefined;

describe.skipIf(!ready)('linux-arm64 under qemu-user vs x86-64', () => {
  const { toolchain: tc, projectDir } = ready ?? ({} as NonNullable<typeof ready>);
  let work: string;
  let x86Env: NodeJS.ProcessEnv;
  let armEnv: NodeJS.ProcessEnv;
  const m = (name: string) => path.join(work, 'models', name);
  // x86 references, computed once (each takes seconds natively)
  let x86Fp32: Classified[];
  let x86Int8: Classified[];

  beforeAll(async () => {
    work = mkdtempSync(path.join(tmpdir(), 'inceptiond-arm64-'));
    mkdirSync(path.join(work, 'models'));
    x86Env = cleanEnv({ INCEPTIOND_STATE_DIR: path.join(work, 'state-x86') });
    armEnv = cleanEnv({ INCEPTIOND_STATE_DIR: path.join(work, 'state-arm64') });
    ok(await x86Cli(['model', 'build', '--out', m('x86.onnx')], x86Env), 'x86 model build');
    ok(await x86Cli(['model', 'quantize', m('x86.onnx'), m('x86-int8.onnx'), '--calibration', SAMPLES, '--json'], x86Env), 'x86 quantize');
    x86Fp32 = parseClassify(
      ok(await x86Cli(['classify', '--model', m('x86.onnx'), '--json', '--top', '1000', ...images], x86Env), 'x86 classify fp32').stdout,
    );
    x86Int8 = parseClassify(
      ok(await x86Cli(['classify', '--model', m('x86-int8.onnx'), '--json', '--top', '1000', ...images], x86Env), 'x86 classify int8')
        .stdout,
    );
    note(`qemu ${tc.qemuVersion} QEMU_CPU=${tc.qemuCpu}, node ${tc.nodeVersion} arm64; x86 references ready`);
  });

  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('runs as arm64: process.arch, onnxruntime-node CPU backend, sharp and the preprocessor', async () => {
    const script = `
      const path = require('node:path');
      const ort = require('onnxruntime-node');
      const sharp = require('sharp');
      const { createHash } = require('node:crypto');
      const { readFileSync } = require('node:fs');
      (async () => {
        const sessionMs = {};
        for (const model of process.argv[1].split(',')) {
          const t0 = performance.now();
          const session = await ort.InferenceSession.create(model, { executionProviders: ['cpu'], intraOpNumThreads: 2, graphOptimizationLevel: 'all' });
          sessionMs[path.basename(model)] = Math.round(performance.now() - t0);
          await session.release();
        }
        const { createPreprocessor } = await import(path.resolve('dist/vision/index.js'));
        const spec = JSON.parse(readFileSync(process.argv[1].split(',')[0] + '.json', 'utf8')).input;
        const pre = createPreprocessor(spec);
        const tensors = {};
        for (const f of process.argv.slice(2)) {
          const t = (await pre(readFileSync(f))).tensor.data;
          tensors[path.basename(f)] = createHash('sha256').update(Buffer.from(t.buffer, t.byteOffset, t.byteLength)).digest('hex');
        }
        const png = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#c03020' } }).png().toBuffer();
        console.log(JSON.stringify({
          arch: process.arch, platform: process.platform,
          backends: ort.listSupportedBackends().map((b) => b.name),
          vips: sharp.versions.vips, pngBytes: png.length, sessionMs, tensors,
        }));
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const models = [m('x86.onnx'), m('x86-int8.onnx')].join(',');
    const res = await runArm64(tc, ['node', '-e', script, models, ...images], { cwd: projectDir, env: armEnv, timeoutMs: 180_000 });
    expect(res.code, res.stderr).toBe(0);
    const info = JSON.parse(res.stdout.trim().split('\n').pop()!);
    expect(info.arch).toBe('arm64');
    expect(info.platform).toBe('linux');
    expect(info.backends).toContain('cpu');
    // sharp loads only the binding of the running platform: a PNG out of it means @img/sharp-linux-arm64 works.
    expect(info.pngBytes).toBeGreaterThan(0);
    expect(Object.keys(info.sessionMs)).toHaveLength(2);

    // The same preprocessor on x86: decoding, resizing and normalising must give the very same tensor.
    const { createPreprocessor } = await import(path.join(root, 'dist', 'vision', 'index.js'));
    const { createHash } = await import('node:crypto');
    const pre = createPreprocessor(JSON.parse(readFileSync(m('x86.onnx.json'), 'utf8')).input);
    for (const f of images) {
      const t = (await pre(readFileSync(f))).tensor.data as Float32Array;
      const hash = createHash('sha256')
        .update(Buffer.from(t.buffer, t.byteOffset, t.byteLength))
        .digest('hex');
      expect(info.tensors[path.basename(f)], `input tensor of ${path.basename(f)}`).toBe(hash);
    }
    note(
      `arm64 node: arch ${info.arch}, ORT backends [${info.backends}], libvips ${info.vips}; ${images.length} input tensors bit-identical to x86; ` +
        `session create FP32 ${secs(info.sessionMs['x86.onnx'])}, INT8 ${secs(info.sessionMs['x86-int8.onnx'])} (${secs(res.ms)} in all)`,
    );
  }, 180_000);

  it('model build on arm64 writes the same bytes as on x86', async () => {
    const res = ok(await armCli(tc, projectDir, ['model', 'build', '--out', m('arm64.onnx')], armEnv, 470_000), 'arm64 model build');
    const arm = sha256File(m('arm64.onnx'));
    expect(arm).toBe(sha256File(m('x86.onnx')));
    note(`model build: sha256 ${arm.slice(0, 16)}… identical on both (arm64 ${secs(res.ms)})`);
  }, 480_000);

  it('quantizes on arm64 like on x86, and that INT8 model scores alike on both', async () => {
    const calib = path.join(work, 'calibration');
    mkdirSync(calib);
    for (const f of images.slice(0, QUANTIZE_IMAGES)) copyFileSync(f, path.join(calib, path.basename(f)));
    const args = (out: string) => ['model', 'quantize', m('x86.onnx'), m(out), '--calibration', calib, '--json'];
    const armRes = ok(await armCli(tc, projectDir, args('arm64-q.onnx'), armEnv, 420_000), 'arm64 quantize');
    const x86Res = ok(await x86Cli(args('x86-q.onnx'), x86Env), 'x86 quantize');
    const armQ = JSON.parse(armRes.stdout) as QuantizeReport;
    const x86Q = JSON.parse(x86Res.stdout) as QuantizeReport;
    expect(armQ.calibrationImages).toBe(QUANTIZE_IMAGES);
    expect(armQ.tensors.map((t) => t.tensor)).toEqual(x86Q.tensors.map((t) => t.tensor));
    let sameScale = 0;
    let maxRel = 0;
    let worst = '';
    let zpDiffs = 0;
    armQ.tensors.forEach((a, i) => {
      const b = x86Q.tensors[i]!;
      const rel = Math.abs(a.scale - b.scale) / Math.max(Math.abs(b.scale), Number.MIN_VALUE);
      if (a.scale === b.scale) sameScale += 1;
      if (rel > maxRel) [maxRel, worst] = [rel, a.tensor];
      if (a.zeroPoint !== b.zeroPoint) zpDiffs += 1;
      expect(Math.abs(a.zeroPoint - b.zeroPoint), `zero point of ${a.tensor}`).toBeLessThanOrEqual(1);
    });
    const sameModel = sha256File(m('arm64-q.onnx')) === sha256File(m('x86-q.onnx'));
    note(
      `quantize (${QUANTIZE_IMAGES} calibration images, arm64 ${secs(armRes.ms)}, x86 ${secs(x86Res.ms)}): ${armQ.tensors.length} tensors, ` +
        `${sameScale} identical scales, max relative scale difference ${maxRel.toExponential(2)}${worst ? ` (${worst})` : ''}, ` +
        `${zpDiffs} zero points differ; INT8 models ${sameModel ? 'byte-identical' : 'differ'}`,
    );
    expect(maxRel, `relative scale difference (worst: ${worst})`).toBeLessThanOrEqual(SCALE_REL_TOLERANCE);

    // The arm64-quantized model loads and runs on both sides, with the same scores.
    const onX86 = parseClassify(
      ok(await x86Cli(['classify', '--model', m('arm64-q.onnx'), '--json', '--top', '1000', ...images], x86Env), 'x86 classify').stdout,
    );
    const armRun = ok(
      await armCli(tc, projectDir, ['classify', '--model', m('arm64-q.onnx'), '--json', '--top', '1000', ...images], armEnv, 150_000),
      'arm64 classify',
    );
    const onArm = parseClassify(armRun.stdout);
    expect(onArm.every((c) => c.precision === 'int8' && c.provider === 'cpu')).toBe(true);
    const cmp = compare(onX86, onArm);
    note(formatComparison(`arm64-quantized INT8 model, x86 vs arm64 (arm64 ${secs(armRun.ms)})`, cmp));
    // For scale: what the quantization difference itself does, both models on x86 (reported, not asserted).
    const x86Quantized = parseClassify(
      ok(await x86Cli(['classify', '--model', m('x86-q.onnx'), '--json', '--top', '1000', ...images], x86Env), 'x86 classify').stdout,
    );
    const qcmp = compare(x86Quantized, onX86);
    note(
      `x86-quantized vs arm64-quantized INT8 model, both on x86: top-1 ${qcmp.top1Agree}/${images.length} same, max |Δscore| ${qcmp.maxAbs.toExponential(2)}`,
    );
    expect(cmp.top1Agree).toBe(images.length);
    expect(cmp.maxAbs).toBeLessThanOrEqual(INT8_TOLERANCE);
  }, 600_000);

  it('classifies the samples on arm64 like on x86, FP32 and INT8', async () => {
    for (const [precision, model, reference, tolerance] of [
      ['FP32', m('x86.onnx'), x86Fp32, FP32_TOLERANCE],
      ['INT8', m('x86-int8.onnx'), x86Int8, INT8_TOLERANCE],
    ] as const) {
      const res = ok(
        await armCli(
          tc,
          projectDir,
          ['classify', '--model', model, '--json', '--top', '1000', ...images],
          armEnv,
          precision === 'FP32' ? 440_000 : 150_000,
        ),
        `arm64 classify ${precision}`,
      );
      const arm = parseClassify(res.stdout);
      expect(arm.map((c) => path.basename(c.image))).toEqual(images.map((f) => path.basename(f)));
      expect(arm.every((c) => c.provider === 'cpu' && c.precision === precision.toLowerCase())).toBe(true);
      const cmp = compare(reference, arm);
      const perRun = arm.map((c) => c.inferenceMs);
      note(
        formatComparison(
          `${precision} classify x86 vs arm64 (arm64: ${secs(res.ms)} for ${images.length} images, inference median ${secs(median(perRun))}; ` +
            `x86 median ${median(reference.map((c) => c.inferenceMs)).toFixed(1)} ms)`,
          cmp,
        ),
      );
      expect(cmp.top1Agree, `${precision} top-1 agreement`).toBe(images.length);
      expect(cmp.maxAbs, `${precision} max |Δscore|`).toBeLessThanOrEqual(tolerance);
    }
  }, 600_000);

  describe('daemon', () => {
    let broker: TestBroker;
    let collector: Collector | undefined;
    let daemon: Arm64Daemon | undefined;

    beforeAll(async () => {
      broker = await startBroker();
    });
    afterAll(async () => {
      await daemon?.stop('SIGKILL');
      await collector?.close();
      await broker?.stop();
    });

    it('runs on arm64 against a real broker: INT8 Results for every sample, labels as on x86, SIGTERM exits 0', async () => {
      const stateDir = path.join(work, 'daemon-state');
      const baseTopic = `arm64test-${process.pid}`;
      const config = {
        deviceId: 'arm64',
        stateDir,
        capture: { backend: 'files', intervalMs: 0, files: { path: SAMPLES, loop: false } },
        model: { path: m('x86-int8.onnx'), precision: 'auto' },
        mqtt: { url: broker.url, baseTopic },
        inference: { topK: 10 },
        http: { enabled: false },
        metrics: { intervalSec: 0 },
      };
      const configFile = path.join(work, 'daemon.json');
      writeFileSync(configFile, JSON.stringify(config, null, 2));
      collector = await collect(broker.url, `${baseTopic}/#`);
      const t0 = performance.now();
      // As the unit runs it: its Environment= lines, jemalloc preloaded from the arm64 sysroot among them.
      daemon = startArm64Daemon(tc, projectDir, configFile, cleanEnv({ INCEPTIOND_STATE_DIR: stateDir }), unitEnvironment());

      const n = images.length;
      const labelsTopic = `${baseTopic}/camera/labels`;
      const msgs = await collector
        .waitForCount(n, { timeoutMs: 300_000, filter: (msg) => msg.topic === labelsTopic })
        .catch((err: Error) => {
          // Say what the daemon said: a timeout alone does not tell a slow start from a stuck one.
          const said = [...daemon!.logs.slice(-15).map((l) => JSON.stringify(l)), ...daemon!.otherOutput.slice(-15)];
          throw new Error(`${err.message}; the daemon's last output:\n${said.join('\n')}`);
        });
      const firstResultMs = performance.now() - t0;
      const results = msgs.map((msg) => JSON.parse(msg.text) as ResultPayload);
      for (const r of results) {
        const check = validateResult(r);
        expect(check.ok ? [] : check.errors, JSON.stringify(r)).toEqual([]);
      }
      expect(results.map((r) => r.seq)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
      for (const r of results) {
        expect(r.provider).toBe('cpu');
        expect(r.model.precision).toBe('int8');
        expect(r.source).toBe('camera');
      }
      // Frame i is image i (natural name order, no loop): its labels against x86 classify of that image.
      let maxAbs = 0;
      results.forEach((r, i) => {
        const ref = x86Int8[i]!;
        expect(r.labels[0]!.index, `top-1 of ${path.basename(ref.image)}`).toBe(ref.top1);
        for (const l of r.labels) maxAbs = Math.max(maxAbs, Math.abs(l.score - ref.scores[l.index]!));
      });
      expect(maxAbs).toBeLessThanOrEqual(INT8_TOLERANCE);

      const status = collector.json<{ state: string; provider: string; model: { precision: string } }>(`${baseTopic}/status`);
      expect(status.some((s) => s.state === 'online' && s.provider === 'cpu' && s.model.precision === 'int8')).toBe(true);

      const code = await daemon.stop('SIGTERM');
      expect(code, daemon.otherOutput.slice(-10).join('\n')).toBe(0);
      await collector.waitFor((msg) => msg.topic === `${baseTopic}/status` && JSON.parse(msg.text).state === 'stopped', 10_000);
      const inference = results.map((r) => r.latencyMs.inference);
      const ready = daemon.logs.find((l) => typeof l.loadMs === 'number' && typeof l.warmupMs === 'number');
      note(
        `daemon (${broker.kind}): ${n} INT8 Results seq 1..${n} in ${secs(firstResultMs)} from start, top-1 ${n}/${n} as x86, ` +
          `max |Δscore| ${maxAbs.toExponential(2)}, inference median ${secs(median(inference))}` +
          (ready ? `, session load ${secs(Number(ready.loadMs))} + warm-up ${secs(Number(ready.warmupMs))}` : '') +
          `; SIGTERM → exit ${code}`,
      );
      const errors = daemon.logs.filter((l) => l.level >= 50);
      expect(errors, JSON.stringify(errors)).toEqual([]);
      // Debian's arm64 jemalloc loaded and took the unit's MALLOC_CONF: nothing from ld.so or jemalloc on stderr.
      const running = daemon.logs.find((l) => String(l.msg).startsWith('running'));
      expect(running?.allocator).toBe(`jemalloc (MALLOC_CONF=${unitEnvironment().MALLOC_CONF})`);
      expect(daemon.otherOutput.filter((line) => /jemalloc|ld\.so|LD_PRELOAD/.test(line))).toEqual([]);
    }, 420_000);
  });
});
