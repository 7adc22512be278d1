#!/usr/bin/env node
// What a second inference session would buy: the daemon's pipeline shape (sharp preprocessing on the
// main thread, inference in worker threads, each worker holding up to two frames) with K workers of T
// intra-op threads each, against the CPU-bound ceiling measured in the same process (cores × 1000 /
// (inference CPU ms + preprocessing CPU ms per frame), as `inceptiond bench` does). Each configuration
// runs in a fresh process with npm start's memory settings, the configurations interleaved per round.
// Usage: node scripts/measure-workers.mjs [--model M.int8.onnx] [--seconds 8] [--rounds 3] [--configs "1x2,2x1"]
// Prints one JSON line per run: {workers, threads, resultsPerSec, idealFps, efficiency, cpuPercent, rssMaxMb}.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    seconds: { type: 'string', default: '8' },
    rounds: { type: 'string', default: '3' },
    configs: { type: 'string', default: '1x2,2x1' },
    child: { type: 'string' },
  },
});

function newestInt8Model(dir) {
  const files = readdirSync(dir)
    .filter((f) => f.includes('.int8-') && f.endsWith('.onnx'))
    .map((f) => path.join(dir, f));
  if (files.length === 0) throw new Error(`no INT8 model in ${dir}: run npm start once, or pass --model`);
  return files.sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
}

// The worker: one ORT session as the daemon's engine opens it on the CPU (spinning off); runs frames
// in arrival order and sends the input back with the scores, as dist/inference/worker.js does.
const WORKER = `
import { createRequire } from 'node:module';
import { parentPort, workerData } from 'node:worker_threads';
const ort = createRequire(workerData.base)('onnxruntime-node');
const session = await ort.InferenceSession.create(workerData.model, {
  intraOpNumThreads: workerData.threads, interOpNumThreads: 1, graphOptimizationLevel: 'all', executionMode: 'sequential',
  extra: { session: { 'intra_op.allow_spinning': '0', 'inter_op.allow_spinning': '0' } },
});
const input = session.inputNames[0];
parentPort.postMessage({ ready: true });
parentPort.on('message', async (m) => {
  if (m.loop) {
    // the plain session.run loop, for the ceiling: CPU is measured by the parent around it
    const feeds = { [input]: new ort.Tensor('float32', m.data, m.dims) };
    await session.run(feeds);
    const t0 = performance.now();
    let runs = 0;
    while (performance.now() - t0 < m.loop) { await session.run(feeds); runs++; }
    parentPort.postMessage({ runs });
    return;
  }
  const out = await session.run({ [input]: new ort.Tensor('float32', m.data, m.dims) });
  parentPort.postMessage({ scores: out[session.outputNames[0]].data, input: m.data }, [m.data.buffer]);
});`;

async function child(config, model, seconds) {
  const [workers, threads] = config.split('x').map(Number);
  const { createPreprocessor, tuneSharp } = await import('../dist/vision/index.js');
  const manifest = JSON.parse(readFileSync(`${model}.json`, 'utf8'));
  tuneSharp(threads);
  const preprocess = createPreprocessor(manifest.input);
  const samples = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'models', 'samples');
  const frames = readdirSync(samples)
    .filter((f) => f.endsWith('.jpg'))
    .map((f) => readFileSync(path.join(samples, f)));
  const cpuMs = (u) => (u.user + u.system) / 1000;

  const start = () => {
    const w = new Worker(new URL(`data:text/javascript,${encodeURIComponent(WORKER)}`), {
      workerData: { base: import.meta.url, model: path.resolve(model), threads },
    });
    return new Promise((resolve) => w.once('message', () => resolve({ w, pending: 0 })));
  };
  const slots = await Promise.all(Array.from({ length: workers }, start));

  // The pipeline: each worker holds up to two frames; the next frame is preprocessed into a returned tensor.
  let done = 0;
  let next = 0;
  let stopped = false;
  const spare = [];
  const feed = async (slot) => {
    while (!stopped && slot.pending < 2) {
      slot.pending++;
      const p = await preprocess(frames[next++ % frames.length], spare.pop());
      slot.w.postMessage({ data: p.tensor.data, dims: p.tensor.dims }, [p.tensor.data.buffer]);
    }
  };
  for (const slot of slots) {
    slot.w.on('message', (m) => {
      slot.pending--;
      done++;
      spare.push(m.input);
      void feed(slot);
    });
    void feed(slot);
  }
  await new Promise((r) => setTimeout(r, 2000)); // warm-up
  let rssMax = 0;
  const sampler = setInterval(() => (rssMax = Math.max(rssMax, process.memoryUsage.rss())), 200);
  const d0 = done;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const wall = (performance.now() - t0) / 1000;
  const pipelineCpu = cpuMs(process.cpuUsage(c0));
  const results = done - d0;
  clearInterval(sampler);
  stopped = true;
  await new Promise((r) => {
    const check = () => (slots.every((s) => s.pending === 0) ? r() : setTimeout(check, 20));
    check();
  });

  // The ceiling of this configuration: its own session's CPU per run (T threads) and preprocessing alone.
  const probe = await preprocess(frames[0]);
  const loopCpu0 = process.cpuUsage();
  slots[0].w.postMessage({ loop: (seconds / 2) * 1000, data: probe.tensor.data, dims: probe.tensor.dims });
  const { runs } = await new Promise((r) => slots[0].w.once('message', r));
  const inferenceCpuMs = cpuMs(process.cpuUsage(loopCpu0)) / runs;
  const preCpu0 = process.cpuUsage();
  let n = 0;
  const p0 = performance.now();
  while (performance.now() - p0 < (seconds / 2) * 1000) await preprocess(frames[n++ % frames.length]);
  const preprocessCpuMs = cpuMs(process.cpuUsage(preCpu0)) / n;
  const idealFps = (os.availableParallelism() * 1000) / (inferenceCpuMs + preprocessCpuMs);
  const resultsPerSec = results / wall;
  console.log(
    JSON.stringify({
      workers,
      threads,
      resultsPerSec: Number(resultsPerSec.toFixed(1)),
      idealFps: Number(idealFps.toFixed(1)),
      efficiency: Number((resultsPerSec / idealFps).toFixed(3)),
      cpuMsPerFrame: { inference: Number(inferenceCpuMs.toFixed(2)), preprocess: Number(preprocessCpuMs.toFixed(2)) },
      cpuPercent: Number(((pipelineCpu / (wall * 1000)) * 100).toFixed(1)),
      rssMaxMb: Math.round(rssMax / 2 ** 20),
    }),
  );
  process.exit(0); // the workers hold native sessions; this process has said what it measured
}

// After the declarations above: the child runs inside this top-level await.
if (!values.child) {
  const model = values.model ?? newestInt8Model('.state/models');
  for (let round = 0; round < Number(values.rounds); round++) {
    for (const config of values.configs.split(',')) {
      const run = spawnSync(
        process.execPath,
        ['--max-semi-space-size=1', '--v8-pool-size=1', process.argv[1], '--child', config, '--model', model, '--seconds', values.seconds],
        { env: { ...process.env, MALLOC_MMAP_THRESHOLD_: '65536', MALLOC_ARENA_MAX: '1', UV_THREADPOOL_SIZE: '2' }, encoding: 'utf8' },
      );
      const line = run.stdout.split('\n').find((l) => l.startsWith('{'));
      if (!line) throw new Error(`run ${config} failed: ${run.stderr}`);
      console.log(line);
    }
  }
} else {
  await child(values.child, values.model, Number(values.seconds));
}
