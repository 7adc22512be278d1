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
// All of it in a process started as the systemd unit starts the daemon, unless --no-unit-settings (bench.ts).
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createHistogram, performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import sharp from 'sharp';
import { projectRoot, type Config } from '../config/index.js';
import { InferenceEngine, loadRuntime } from '../inference/index.js';
import { sessionOptionsFor } from '../inference/session-options.js';
import { prepareModelIsolated, sessionSettingsFor, type PreparedModel } from '../daemon/model-setup.js';
import { memoryAllocator, percentile, preloadFailure, schedulingPolicy, type AllocatorInfo, type SchedulingPolicy } from '../ops/index.js';
import { byThreadRole, freePort, listImageFiles, round2, THREAD_ROLES, ThreadCpuMeter, type ThreadRole } from '../util/index.js';
import { createPreprocessor, tuneSharp, type Preprocessor } from '../vision/index.js';
import { startBenchBroker } from './bench-broker.js';
import { applyDaemonV8Flags } from './daemon-v8-flags.js';

export interface BenchOptions {
  seconds: number;
  /** Turns the pipeline and the ceiling's measurements take (runBench). */
  rounds: number;
  /** Only the ceiling (session loop and preprocessing), without a pipeline or broker. */
  ceilingOnly?: boolean;
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
  /** Turns the measurements took: the pipeline for seconds ÷ rounds, then the session loop and the preprocessing. */
  rounds: number;
  /** The process the measurements ran in: the systemd unit's settings unless --no-unit-settings (bench.ts). */
  process: BenchProcess;
}

/** The CPU scheduling policy and the malloc the bench's process ran under. */
export interface BenchProcess {
  /** Undefined where the kernel does not say (not Linux). */
  scheduling: SchedulingPolicy | undefined;
  allocator: AllocatorInfo['name'];
}

/** This process's scheduling policy and malloc. */
function benchProcess(): BenchProcess {
  return { scheduling: schedulingPolicy(), allocator: memoryAllocator().name };
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

/** Preprocesses the frames one after another for `seconds`; process CPU ms and frames, added to `into`. */
async function preprocessCpu(
  preprocess: Preprocessor,
  frames: Buffer[],
  seconds: number,
  into: { frames: number; cpuMs: number },
): Promise<void> {
  // Each frame is written into the previous one's array, as in the daemon (a fresh 600 KB array per
  // frame costs ~150 page faults whenever glibc has no freed memory at hand).
  let reuse: Float32Array | undefined;
  // Unmeasured first frames: after the session loop, sharp's code and data are out of the caches.
  for (const frame of frames.slice(0, 2)) reuse = (await preprocess(frame, reuse)).tensor.data;
  const cpu = process.cpuUsage();
  const start = performance.now();
  let n = 0;
  while (n < frames.length || performance.now() - start < seconds * 1000) {
    reuse = (await preprocess(frames[n % frames.length]!, reuse)).tensor.data;
    n++;
  }
  into.cpuMs += cpuMsSince(cpu);
  into.frames += n;
}

/** session.run in a plain loop on this thread with the daemon's session options, spinning off; measured in stretches. */
async function openSessionLoop(model: PreparedModel, config: Config, provider: string, input: Float32Array, dims: number[]) {
  const settings = { ...sessionSettingsFor(config, model), allowSpinning: false };
  // The build the daemon's worker loads (inference.runtime), so both run the same code.
  const { ort } = loadRuntime(config.inference.runtime);
  const session = await ort.InferenceSession.create(model.modelPath, sessionOptionsFor(settings, provider));
  const feeds = { [session.inputNames[0]!]: new ort.Tensor('float32', input, dims) };
  const latencies: number[] = [];
  let cpuMs = 0;
  let elapsedMs = 0;
  return {
    async measure(seconds: number): Promise<void> {
      await session.run(feeds); // unmeasured: after the pipeline or the preprocessing, the caches are cold
      const cpu = process.cpuUsage();
      const start = performance.now();
      for (let n = 0; n < 3 || performance.now() - start < seconds * 1000; n++) {
        const t0 = performance.now();
        await session.run(feeds);
        latencies.push(performance.now() - t0);
      }
      elapsedMs += performance.now() - start;
      cpuMs += cpuMsSince(cpu);
    },
    result() {
      const sorted = Float64Array.from(latencies).sort();
      const r = (x: number | null) => (x === null ? null : round2(x));
      return {
        runs: latencies.length,
        perSecond: latencies.length / (elapsedMs / 1000),
        cpuMsPerRun: cpuMs / latencies.length,
        latencyMs: { p50: r(percentile(sorted, 50)), p99: r(percentile(sorted, 99)) },
      };
    },
    release: () => session.release(),
  };
}

/** A real Daemon in this process on the bench frames (files source at full rate, broker in its own process), measured in stretches. */
async function openPipeline(config: Config, logger: Logger, target: string) {
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
  // Measured from the first Result of each stretch on, so model load, warm-up and each resume are not counted.
  await daemon.waitForResults(1);
  // The bench runs the daemon in this process: its own samples cover the measured seconds only. Not
  // monitorEventLoopDelay: enabled again, it counts the time it was disabled as one late sample.
  const lateness = createHistogram(); // µs a 10 ms timer fired late
  const lateMs = (us: number) => round2(Math.max(0, (us - 1) / 1000)); // recorded +1: a histogram takes ≥ 1
  const threads = new ThreadCpuMeter();
  const total = { runs: 0, cpuMs: 0, elapsedMs: 0, rssMax: 0 };
  let byThread: Record<ThreadRole, number> | undefined = byThreadRole(() => 0);
  let stretches = 0;
  return {
    provider: daemon.info.provider,
    broker: broker.kind,
    /** Runs the pipeline for `seconds` (resuming it first, after the first stretch) and pauses it again. */
    async measure(seconds: number): Promise<void> {
      if (stretches++ > 0) {
        await daemon.pauseSources(false);
        await daemon.waitForResults(daemon.resultCount + 1);
      }
      let due = performance.now() + 10;
      const sampler = setInterval(() => {
        const now = performance.now();
        lateness.record(1 + Math.round(Math.max(0, now - due) * 1000));
        due = now + 10;
      }, 10);
      const startCount = daemon.resultCount;
      // The largest RSS of the first stretch only: later ones share the process with the ceiling's session.
      const trackRss = stretches === 1;
      if (trackRss) total.rssMax = process.memoryUsage.rss();
      const rssTimer = trackRss ? setInterval(() => (total.rssMax = Math.max(total.rssMax, process.memoryUsage.rss())), 250) : undefined;
      const threadsBefore = threads.sample();
      const cpu = process.cpuUsage();
      const start = performance.now();
      await new Promise((r) => setTimeout(r, seconds * 1000));
      total.elapsedMs += performance.now() - start;
      total.cpuMs += cpuMsSince(cpu);
      total.runs += daemon.resultCount - startCount;
      const threadsAfter = threads.sample();
      clearInterval(rssTimer);
      clearInterval(sampler);
      if (byThread && threadsBefore && threadsAfter) {
        const sofar = byThread;
        byThread = byThreadRole((role) => sofar[role] + threadsAfter[role] - threadsBefore[role]);
      } else {
        byThread = undefined;
      }
      await daemon.pauseSources(true);
    },
    result() {
      const snapshot = daemon.metricsPeek();
      const { runs } = total;
      const perResult = byThread;
      return {
        runs,
        perSecond: runs / (total.elapsedMs / 1000),
        cpuMsPerResult: total.cpuMs / runs,
        cpuMsByThread: perResult ? byThreadRole((role) => round2((perResult[role] * 1000) / runs)) : undefined,
        cpuBusy: total.cpuMs / total.elapsedMs,
        inferenceMs: { p50: snapshot.latencyMs.inference.p50, p99: snapshot.latencyMs.inference.p99 },
        latencyMs: { p50: snapshot.latencyMs.total.p50, p99: snapshot.latencyMs.total.p99 },
        eventLoopDelayMs:
          lateness.count > 0 ? { p50: lateMs(lateness.percentile(50)), p99: lateMs(lateness.percentile(99)) } : { p50: null, p99: null },
        rssMax: total.rssMax,
      };
    },
    async close(): Promise<void> {
      await daemon.stop('bench finished');
      await broker.close();
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}

/**
 * The CPU-bound ceiling on these frames, measured in stretches: each `measure(seconds)` runs the plain
 * session loop for half of it and preprocesses the frames for the other half.
 */
async function openCeiling(config: Config, model: PreparedModel, provider: string, frames: Buffer[]) {
  // The daemon's libvips settings, for the preprocessing measured here as for the pipeline.
  tuneSharp(config.inference.threads * config.inference.workers);
  const preprocess = createPreprocessor(model.manifest.input);
  const prepared = await preprocess(frames[0]!); // also the warm-up
  const session = await openSessionLoop(model, config, provider, prepared.tensor.data, prepared.tensor.dims);
  const pre = { frames: 0, cpuMs: 0 };
  const cores = os.availableParallelism();
  return {
    cores,
    async measure(seconds: number): Promise<void> {
      await session.measure(seconds / 2);
      await preprocessCpu(preprocess, frames, seconds / 2, pre);
    },
    result() {
      const loop = session.result();
      const preprocessCpuMs = pre.cpuMs / pre.frames;
      return { ...loop, preprocessCpuMs, idealFps: round2((cores * 1000) / (loop.cpuMsPerRun + preprocessCpuMs)) };
    },
    release: () => session.release(),
  };
}

/** The frames, read, and their sizes. */
async function readFrames(imgs: BenchImages): Promise<{ frames: Buffer[]; sizes: string[] }> {
  const frames = await Promise.all(imgs.files.map((f) => readFile(f)));
  const sizes = new Set<string>();
  for (const f of frames) {
    const m = await sharp(f).metadata();
    sizes.add(`${m.width}x${m.height}`);
  }
  return { frames, sizes: [...sizes] };
}

/** What `bench --ceiling-only --json` prints: the ceiling without the pipeline (no daemon, no broker). */
export interface CeilingJson {
  model: string;
  precision: string;
  provider: string;
  threads: number;
  workers: number;
  sessionFps: number;
  idealFps: number;
  cpuMsPerFrame: { inference: number; preprocess: number };
  images: { source: string; count: number; sizes: string[] };
  cores: number;
  seconds: number;
  rounds: number;
  process: BenchProcess;
}

/**
 * The ceiling alone, in `rounds` stretches of the session loop and the preprocessing, on the provider an
 * inference engine ends up on with this configuration (started once to find it, then closed). Scripts
 * that run the real daemon take turns with it (scripts/measure-daemon.mjs --ceiling).
 */
export async function runCeiling(config: Config, logger: Logger, seconds: number, images?: string, rounds = 10): Promise<CeilingJson> {
  const model = await prepareModelIsolated(config, logger, { logFd: 2 });
  const imgs = await benchImages(config, images);
  try {
    const { frames, sizes } = await readFrames(imgs);
    const engine = await InferenceEngine.create(sessionSettingsFor(config, model), logger);
    const provider = engine.provider;
    await engine.close();
    const ceiling = await openCeiling(config, model, provider, frames);
    try {
      for (let round = 0; round < rounds; round++) await ceiling.measure(seconds / rounds);
    } finally {
      await ceiling.release();
    }
    const c = ceiling.result();
    return {
      model: model.manifest.name,
      precision: model.precision,
      provider,
      threads: config.inference.threads,
      workers: config.inference.workers,
      sessionFps: round2(c.perSecond),
      idealFps: c.idealFps,
      cpuMsPerFrame: { inference: round2(c.cpuMsPerRun), preprocess: round2(c.preprocessCpuMs) },
      images: { source: imgs.source, count: frames.length, sizes },
      cores: ceiling.cores,
      seconds,
      rounds,
      process: benchProcess(),
    };
  } finally {
    await imgs.cleanup();
  }
}

/**
 * The measurements take turns, `rounds` times: the pipeline for seconds ÷ rounds, then the session loop
 * and the preprocessing for half that each. A shared machine's speed drifts by 10 % within a minute
 * (README, "Benchmarks"); taken in turns, the pipeline and its ceiling see the same drift.
 */
export async function runBench(config: Config, logger: Logger, seconds: number, images?: string, rounds = 10): Promise<BenchReport> {
  const model = await prepareModelIsolated(config, logger, { logFd: 2 });
  const imgs = await benchImages(config, images);
  try {
    const { frames, sizes } = await readFrames(imgs);
    const pipeline = await openPipeline(config, logger, imgs.target);
    let ceiling: Awaited<ReturnType<typeof openCeiling>> | undefined;
    try {
      for (let round = 0; round < rounds; round++) {
        await pipeline.measure(seconds / rounds);
        // The session loop needs the engine's provider, known once the pipeline runs.
        ceiling ??= await openCeiling(config, model, pipeline.provider, frames);
        await ceiling.measure(seconds / rounds);
      }
    } finally {
      await pipeline.close();
      await ceiling?.release();
    }
    const piped = pipeline.result();
    const c = ceiling!.result();
    const rssAfterSession = process.memoryUsage.rss();
    const pipelineFps = round2(piped.perSecond);
    return {
      model: model.manifest.name,
      precision: model.precision,
      provider: pipeline.provider,
      broker: pipeline.broker,
      threads: config.inference.threads,
      workers: config.inference.workers,
      sessionFps: round2(c.perSecond),
      idealFps: c.idealFps,
      pipelineFps,
      efficiency: round3(pipelineFps / c.idealFps),
      cpuMsPerFrame: {
        inference: round2(c.cpuMsPerRun),
        preprocess: round2(c.preprocessCpuMs),
        pipeline: round2(piped.cpuMsPerResult),
        ...(piped.cpuMsByThread ? { pipelineByThread: piped.cpuMsByThread } : {}),
      },
      coresBusy: round2(piped.cpuBusy),
      latencyMs: piped.latencyMs,
      eventLoopDelayMs: piped.eventLoopDelayMs,
      rssMb: Math.round(piped.rssMax / 2 ** 20),
      images: { source: imgs.source, count: frames.length, sizes },
      cores: os.availableParallelism(),
      seconds,
      rounds,
      process: benchProcess(),
      synthetic: model.synthetic,
      modelPath: model.modelPath,
      session: { runs: c.runs, latencyMs: c.latencyMs },
      pipeline: { runs: piped.runs, inferenceMs: piped.inferenceMs },
      rssMbAfterSession: Math.round(rssAfterSession / 2 ** 20),
    };
  } finally {
    await imgs.cleanup();
  }
}

const processLine = (p: BenchProcess) => `process   ${p.scheduling ?? 'unknown'} CPU scheduling, ${p.allocator} malloc`;

export async function benchCommand(config: Config, logger: Logger, opts: BenchOptions): Promise<void> {
  // As `run` sets them: the pipeline measured here is the daemon's.
  applyDaemonV8Flags();
  const failure = preloadFailure(memoryAllocator());
  if (failure) logger.warn(`${failure}: measuring on it, as the service would run`);
  if (opts.ceilingOnly) {
    const c = await runCeiling(config, logger, opts.seconds, opts.images, opts.rounds);
    if (opts.json) {
      process.stdout.write(`${JSON.stringify(c satisfies CeilingJson)}\n`);
      return;
    }
    process.stdout.write(
      [
        `model     ${c.model} (${c.precision}), provider ${c.provider}, ${c.workers} worker(s) of ${c.threads} intra-op thread(s), ${c.cores} cores`,
        `images    ${c.images.count} from ${c.images.source} (${c.images.sizes.join(', ')})`,
        processLine(c.process),
        `raw       ${c.sessionFps}/s session.run`,
        `cpu       ${c.cpuMsPerFrame.inference} ms inference + ${c.cpuMsPerFrame.preprocess} ms preprocessing per frame → ideal ${c.idealFps}/s`,
        '',
      ].join('\n'),
    );
    return;
  }
  const r = await runBench(config, logger, opts.seconds, opts.images, opts.rounds);
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
      processLine(r.process),
      `raw       ${r.sessionFps}/s session.run (p50 ${r.session.latencyMs.p50} ms, p99 ${r.session.latencyMs.p99} ms, ${r.session.runs} runs)`,
      `cpu       ${r.cpuMsPerFrame.inference} ms inference + ${r.cpuMsPerFrame.preprocess} ms preprocessing per frame → ideal ${r.idealFps}/s`,
      `pipeline  ${r.pipelineFps}/s Results (inference p50 ${r.pipeline.inferenceMs.p50} ms, total p50 ${r.latencyMs.p50} ms, p99 ${r.latencyMs.p99} ms)`,
      `pipeline  ${r.cpuMsPerFrame.pipeline} CPU ms per Result (every thread), ${r.coresBusy} of ${r.cores} cores busy`,
      ...(r.cpuMsPerFrame.pipelineByThread
        ? [`threads   ${THREAD_ROLES.map((role) => `${role} ${r.cpuMsPerFrame.pipelineByThread![role]}`).join(', ')} CPU ms per Result`]
        : []),
      `ratio     pipeline/ideal = ${r.efficiency}, pipeline/raw = ${round3(r.pipelineFps / r.sessionFps)}`,
      `event loop delay while inferring: p50 ${r.eventLoopDelayMs.p50} ms, p99 ${r.eventLoopDelayMs.p99} ms`,
      `RSS       ${r.rssMb} MB max during the first pipeline stretch, ${r.rssMbAfterSession} MB at the end (one process)`,
      '',
    ].join('\n'),
  );
}
