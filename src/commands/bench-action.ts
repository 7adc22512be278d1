// What `inceptiond bench` does (loaded when it runs): how fast the configured model could go on this
// machine and how fast the whole daemon pipeline (files source → sharp → worker inference → top-k →
// outbox → MQTT) goes, in one run so the ratios are meaningful on a noisy machine.
//
// - sessionFps: session.run in a plain loop on this thread (no preprocessing), the engine's provider.
// - idealFps: the CPU-bound ceiling, cores × 1000 / (inference CPU ms + preprocessing CPU ms per frame),
//   each measured with process.cpuUsage (every thread of the process: ONNX Runtime's pool, sharp's)
//   around the plain session.run loop (spinning off, so idle threads burn nothing) and around the
//   preprocessing of the benchmark frames, one after another.
// - pipelineFps: Results per second of a real Daemon on the same frames, as fast as it can, publishing
//   to a broker in another process (bench-broker.ts), as on a board whose broker runs elsewhere.
// - efficiency = pipelineFps / idealFps: what the pipeline's overlap, queueing and overheads leave.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import sharp from 'sharp';
import { projectRoot, type Config } from '../config/index.js';
import { loadRuntime } from '../inference/index.js';
import { sessionOptionsFor } from '../inference/session-options.js';
import { prepareModelIsolated, sessionSettingsFor, type PreparedModel } from '../daemon/model-setup.js';
import { percentile } from '../ops/index.js';
import { byThreadRole, freePort, listImageFiles, round2, THREAD_ROLES, ThreadCpuMeter, type ThreadRole } from '../util/index.js';
import { createPreprocessor, tuneSharp, type Preprocessor } from '../vision/index.js';
import { startBenchBroker } from './bench-broker.js';

export interface BenchOptions {
  seconds: number;
  json: boolean;
  /** A folder or glob of images, or 'generated'; absent: the config's files source, else generated. */
  images?: string;
}

/** Camera-like frames the bench makes when no images are configured: sizes, and frames per size. */
export const GENERATED_SIZES: ReadonlyArray<readonly [number, number]> = [
  [640, 480],
  [1280, 720],
];
const GENERATED_PER_SIZE = 4;

type P50P99 = { p50: number | null; p99: number | null };

/** What `bench --json` prints, on one line. */
export interface BenchJson {
  model: string;
  precision: string;
  /** The provider the daemon's engine ended up on (not the configured list). */
  provider: string;
  /** The broker the pipeline published to, in its own process: Mosquitto when installed, else Aedes. */
  broker: 'mosquitto' | 'aedes';
  /** Intra-op threads per session. */
  threads: number;
  /** Inference workers (sessions) the pipeline ran with; sessionFps is one session's loop, and the ceiling uses its CPU per run. */
  workers: number;
  sessionFps: number;
  idealFps: number;
  pipelineFps: number;
  /** pipelineFps / idealFps. */
  efficiency: number;
  /**
   * Process CPU ms per frame: session.run alone, preprocessing alone, and per Result in the pipeline
   * (every thread: capture, preprocessing, inference, outbox, MQTT; not the broker's process), and the
   * pipeline's split by thread role (util/threads.ts; absent without /proc).
   */
  cpuMsPerFrame: { inference: number; preprocess: number; pipeline: number; pipelineByThread?: Record<ThreadRole, number> };
  /** Cores kept busy by the pipeline (process CPU time / wall time): with cpuMsPerFrame.pipeline, where efficiency goes. */
  coresBusy: number;
  /** Capture → Result in the pipeline. */
  latencyMs: P50P99;
  /** Main thread's event-loop delay while the pipeline runs. */
  eventLoopDelayMs: P50P99;
  /** Largest RSS of the process while the pipeline ran. */
  rssMb: number;
  /** What the frames were: where from, how many, their sizes. */
  images: { source: string; count: number; sizes: string[] };
  cores: number;
  seconds: number;
}

export interface BenchReport extends BenchJson {
  synthetic: boolean;
  modelPath: string;
  session: { runs: number; latencyMs: { p50: number | null; p99: number | null } };
  pipeline: { runs: number; inferenceMs: P50P99 };
  rssMbAfterSession: number;
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;
const cpuMsSince = (start: NodeJS.CpuUsage) => {
  const u = process.cpuUsage(start);
  return (u.user + u.system) / 1000;
};

interface BenchImages {
  /** Path or glob the files source reads. */
  target: string;
  files: string[];
  source: string;
  cleanup: () => Promise<void>;
}

/**
 * Camera-like JPEGs: a photograph from models/samples resized up to each size, with fresh ±8-level
 * noise per frame (so no two frames are alike, as from a sensor), baseline JPEG at quality 85.
 */
async function generateImages(): Promise<BenchImages> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'inceptiond-bench-frames-'));
  const photo = await readFile(path.join(projectRoot, 'models', 'samples', '07-street.jpg'));
  let state = 20240601;
  const files: string[] = [];
  for (const [width, height] of GENERATED_SIZES) {
    const { data, info } = await sharp(photo).resize(width, height, { fit: 'cover' }).raw().toBuffer({ resolveWithObject: true });
    for (let n = 0; n < GENERATED_PER_SIZE; n++) {
      const noisy = Buffer.allocUnsafe(data.length);
      for (let i = 0; i < data.length; i++) {
        state = (state * 1103515245 + 12345) >>> 0;
        noisy[i] = Math.max(0, Math.min(255, data[i]! + ((state >>> 24) & 15) - 8));
      }
      const file = path.join(dir, `${width}x${height}-${n}.jpg`);
      await writeFile(file, await sharp(noisy, { raw: info }).jpeg({ quality: 85 }).toBuffer());
      files.push(file);
    }
  }
  return { target: dir, files, source: 'generated', cleanup: () => rm(dir, { recursive: true, force: true }) };
}

async function benchImages(config: Config, images: string | undefined): Promise<BenchImages> {
  const configured = images ?? config.sources.find((s) => s.backend === 'files')?.files.path;
  if (configured === undefined || configured === 'generated') return generateImages();
  // A folder, a glob or one file, as the files source takes them.
  const files = await listImageFiles(configured, 'bench images');
  return { target: configured, files, source: configured, cleanup: async () => undefined };
}

/** Preprocesses the frames one after another for `seconds`; process CPU ms per frame. */
async function preprocessCpu(preprocess: Preprocessor, frames: Buffer[], seconds: number): Promise<{ frames: number; cpuMs: number }> {
  await preprocess(frames[0]!); // warm-up
  const cpu = process.cpuUsage();
  const start = performance.now();
  let n = 0;
  while (n < frames.length || performance.now() - start < seconds * 1000) {
    await preprocess(frames[n % frames.length]!);
    n++;
  }
  return { frames: n, cpuMs: cpuMsSince(cpu) };
}

/** session.run in a plain loop on this thread with the daemon's session options, spinning off. */
async function sessionLoop(model: PreparedModel, config: Config, provider: string, input: Float32Array, dims: number[], seconds: number) {
  const settings = { ...sessionSettingsFor(config, model), allowSpinning: false };
  // The build the daemon's worker loads (inference.runtime), so both run the same code.
  const { ort } = loadRuntime(config.inference.runtime);
  const session = await ort.InferenceSession.create(model.modelPath, sessionOptionsFor(settings, provider));
  try {
    const feeds = { [session.inputNames[0]!]: new ort.Tensor('float32', input, dims) };
    await session.run(feeds); // warm-up
    const latencies: number[] = [];
    const cpu = process.cpuUsage();
    const start = performance.now();
    while (latencies.length < 3 || performance.now() - start < seconds * 1000) {
      const t0 = performance.now();
      await session.run(feeds);
      latencies.push(performance.now() - t0);
    }
    const elapsed = (performance.now() - start) / 1000;
    const cpuMs = cpuMsSince(cpu);
    const sorted = Float64Array.from(latencies).sort();
    const r = (x: number | null) => (x === null ? null : round2(x));
    return {
      runs: latencies.length,
      perSecond: latencies.length / elapsed,
      cpuMsPerRun: cpuMs / latencies.length,
      latencyMs: { p50: r(percentile(sorted, 50)), p99: r(percentile(sorted, 99)) },
    };
  } finally {
    await session.release();
  }
}

async function pipelineRun(config: Config, logger: Logger, target: string, seconds: number) {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'inceptiond-bench-'));
  const port = await freePort();
  const broker = await startBenchBroker(port, logger);
  const source = { ...config.sources[0]!, id: 'bench', backend: 'files' as const, intervalMs: 0, files: { path: target, loop: true } };
  const benchConfig: Config = {
    ...config,
    stateDir,
    sources: [source],
    mqtt: { ...config.mqtt, url: broker.url, embeddedBroker: { ...config.mqtt.embeddedBroker, enabled: false } },
    http: { ...config.http, enabled: false },
    metrics: { intervalSec: 0 },
  };
  const { Daemon } = await import('../daemon/index.js');
  const daemon = await Daemon.start(benchConfig, logger).catch(async (err: unknown) => {
    await broker.close();
    await rm(stateDir, { recursive: true, force: true });
    throw err;
  });
  try {
    // Measure from the first Result on, so model load and warm-up are not counted.
    await daemon.waitForResults(1);
    // The bench runs the daemon in this process: its own histogram covers the measured seconds only.
    const loop = monitorEventLoopDelay({ resolution: 10 });
    const lateMs = (ns: number) => round2(Math.max(0, ns / 1e6 - 10)); // samples include the period
    loop.enable();
    const startCount = daemon.resultCount;
    let rssMax = process.memoryUsage.rss();
    const rssTimer = setInterval(() => (rssMax = Math.max(rssMax, process.memoryUsage.rss())), 250);
    const threads = new ThreadCpuMeter();
    const threadsBefore = threads.sample();
    const cpu = process.cpuUsage();
    const start = performance.now();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const elapsed = (performance.now() - start) / 1000;
    const cpuMs = cpuMsSince(cpu);
    const threadsAfter = threads.sample();
    clearInterval(rssTimer);
    loop.disable();
    const runs = daemon.resultCount - startCount;
    const snapshot = daemon.metricsPeek();
    return {
      provider: daemon.info.provider,
      broker: broker.kind,
      runs,
      perSecond: runs / elapsed,
      cpuMsPerResult: cpuMs / runs,
      cpuMsByThread:
        threadsBefore && threadsAfter
          ? byThreadRole((role) => round2(((threadsAfter[role] - threadsBefore[role]) * 1000) / runs))
          : undefined,
      cpuBusy: cpuMs / (elapsed * 1000),
      inferenceMs: { p50: snapshot.latencyMs.inference.p50, p99: snapshot.latencyMs.inference.p99 },
      latencyMs: { p50: snapshot.latencyMs.total.p50, p99: snapshot.latencyMs.total.p99 },
      eventLoopDelayMs: loop.count > 0 ? { p50: lateMs(loop.percentile(50)), p99: lateMs(loop.percentile(99)) } : { p50: null, p99: null },
      rssMax,
    };
  } finally {
    await daemon.stop('bench finished');
    await broker.close();
    await rm(stateDir, { recursive: true, force: true });
  }
}

export async function runBench(config: Config, logger: Logger, seconds: number, images?: string): Promise<BenchReport> {
  const model = await prepareModelIsolated(config, logger, { logFd: 2 });
  const imgs = await benchImages(config, images);
  try {
    const frames = await Promise.all(imgs.files.map((f) => readFile(f)));
    const sizes = new Set<string>();
    for (const f of frames) {
      const m = await sharp(f).metadata();
      sizes.add(`${m.width}x${m.height}`);
    }
    // The daemon's libvips settings, for the preprocessing measured here as for the pipeline.
    tuneSharp(config.inference.threads * config.inference.workers);
    const preprocess = createPreprocessor(model.manifest.input);
    const prepared = await preprocess(frames[0]!);

    // Preprocessing before and after the pipeline, the session loop after it (it needs the engine's
    // provider): averaged over a changing machine as far as the order allows.
    const preA = await preprocessCpu(preprocess, frames, seconds / 4);
    const pipeline = await pipelineRun(config, logger, imgs.target, seconds);
    const session = await sessionLoop(model, config, pipeline.provider, prepared.tensor.data, prepared.tensor.dims, seconds / 2);
    const rssAfterSession = process.memoryUsage.rss();
    const preB = await preprocessCpu(preprocess, frames, seconds / 4);

    const cores = os.availableParallelism();
    const preprocessCpuMs = (preA.cpuMs + preB.cpuMs) / (preA.frames + preB.frames);
    const idealFps = round2((cores * 1000) / (session.cpuMsPerRun + preprocessCpuMs));
    const pipelineFps = round2(pipeline.perSecond);
    return {
      model: model.manifest.name,
      precision: model.precision,
      provider: pipeline.provider,
      broker: pipeline.broker,
      threads: config.inference.threads,
      workers: config.inference.workers,
      sessionFps: round2(session.perSecond),
      idealFps,
      pipelineFps,
      efficiency: round3(pipelineFps / idealFps),
      cpuMsPerFrame: {
        inference: round2(session.cpuMsPerRun),
        preprocess: round2(preprocessCpuMs),
        pipeline: round2(pipeline.cpuMsPerResult),
        ...(pipeline.cpuMsByThread ? { pipelineByThread: pipeline.cpuMsByThread } : {}),
      },
      coresBusy: round2(pipeline.cpuBusy),
      latencyMs: pipeline.latencyMs,
      eventLoopDelayMs: pipeline.eventLoopDelayMs,
      rssMb: Math.round(pipeline.rssMax / 2 ** 20),
      images: { source: imgs.source, count: frames.length, sizes: [...sizes] },
      cores,
      seconds,
      synthetic: model.synthetic,
      modelPath: model.modelPath,
      session: { runs: session.runs, latencyMs: session.latencyMs },
      pipeline: { runs: pipeline.runs, inferenceMs: pipeline.inferenceMs },
      rssMbAfterSession: Math.round(rssAfterSession / 2 ** 20),
    };
  } finally {
    await imgs.cleanup();
  }
}

export async function benchCommand(config: Config, logger: Logger, opts: BenchOptions): Promise<void> {
  const r = await runBench(config, logger, opts.seconds, opts.images);
  if (opts.json) {
    const { synthetic: _s, modelPath: _m, session: _se, pipeline: _p, rssMbAfterSession: _r, ...json } = r;
    process.stdout.write(`${JSON.stringify(json satisfies BenchJson)}\n`);
    return;
  }
  process.stdout.write(
    [
      `model     ${r.model} (${r.precision}${r.synthetic ? ', synthetic weights' : ''}) ${r.modelPath}`,
      `provider  ${r.provider}, ${r.workers} worker(s) of ${r.threads} intra-op thread(s), ${r.cores} cores; broker ${r.broker} (own process)`,
      `images    ${r.images.count} from ${r.images.source} (${r.images.sizes.join(', ')})`,
      `raw       ${r.sessionFps}/s session.run (p50 ${r.session.latencyMs.p50} ms, p99 ${r.session.latencyMs.p99} ms, ${r.session.runs} runs)`,
      `cpu       ${r.cpuMsPerFrame.inference} ms inference + ${r.cpuMsPerFrame.preprocess} ms preprocessing per frame → ideal ${r.idealFps}/s`,
      `pipeline  ${r.pipelineFps}/s Results (inference p50 ${r.pipeline.inferenceMs.p50} ms, total p50 ${r.latencyMs.p50} ms, p99 ${r.latencyMs.p99} ms)`,
      `pipeline  ${r.cpuMsPerFrame.pipeline} CPU ms per Result (every thread), ${r.coresBusy} of ${r.cores} cores busy`,
      ...(r.cpuMsPerFrame.pipelineByThread
        ? [`threads   ${THREAD_ROLES.map((role) => `${role} ${r.cpuMsPerFrame.pipelineByThread![role]}`).join(', ')} CPU ms per Result`]
        : []),
      `ratio     pipeline/ideal = ${r.efficiency}, pipeline/raw = ${round3(r.pipelineFps / r.sessionFps)}`,
      `event loop delay while inferring: p50 ${r.eventLoopDelayMs.p50} ms, p99 ${r.eventLoopDelayMs.p99} ms`,
      `RSS       ${r.rssMb} MB max during the pipeline, ${r.rssMbAfterSession} MB after the session loop (one process)`,
      '',
    ].join('\n'),
  );
}
