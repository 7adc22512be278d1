// What `inceptiond bench` does (loaded when it runs): the raw session.run rate of the configured model
// against the rate of the whole daemon pipeline (files source → sharp → worker inference → top-k →
// outbox → MQTT), in one run so the ratio is meaningful on a noisy machine. Raw is measured before and
// after the pipeline and averaged.
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { projectRoot, type Config } from '../config/index.js';
import { loadRuntime } from '../inference/index.js';
import { sessionOptionsFor } from '../inference/session-options.js';
import { prepareModelIsolated, sessionSettingsFor, type PreparedModel } from '../daemon/model-setup.js';
import { percentile } from '../ops/index.js';
import { freePort, round2 } from '../util/index.js';
import { createPreprocessor } from '../vision/index.js';

export interface BenchOptions {
  seconds: number;
  json: boolean;
}

interface RateStats {
  runs: number;
  seconds: number;
  perSecond: number;
  latencyMs: { p50: number | null; p90: number | null; p99: number | null };
}

export interface BenchReport {
  model: { name: string; precision: string; synthetic: boolean; path: string };
  provider: string;
  threads: number;
  raw: RateStats;
  pipeline: RateStats & { totalLatencyMs: { p50: number | null; p99: number | null }; eventLoopDelayP99Ms: number | null };
  /** pipeline.perSecond / raw.perSecond (target ≥ 0.95). */
  pipelineToRaw: number;
  rssMB: { afterRaw: number; pipelineMax: number };
}

function stats(latencies: number[], seconds: number): RateStats {
  const sorted = Float64Array.from(latencies).sort();
  const r = (x: number | null) => (x === null ? null : round2(x));
  return {
    runs: latencies.length,
    seconds: round2(seconds),
    perSecond: round2(latencies.length / seconds),
    latencyMs: { p50: r(percentile(sorted, 50)), p90: r(percentile(sorted, 90)), p99: r(percentile(sorted, 99)) },
  };
}

async function imagesFolder(config: Config): Promise<string> {
  const files = config.sources.find((s) => s.backend === 'files');
  return files ? files.files.path : path.join(projectRoot, 'models', 'samples');
}

/** session.run in a plain loop on this thread with the daemon's session options: the ceiling. */
async function rawLoop(model: PreparedModel, config: Config, input: Float32Array, dims: number[], seconds: number) {
  const settings = sessionSettingsFor(config, model);
  const provider = config.inference.executionProviders[0] ?? 'cpu';
  // The build the daemon's worker loads (inference.runtime), so raw and pipeline run the same code.
  const { ort } = loadRuntime(config.inference.runtime);
  const session = await ort.InferenceSession.create(model.modelPath, sessionOptionsFor(settings, provider));
  try {
    const feeds = { [session.inputNames[0]!]: new ort.Tensor('float32', input, dims) };
    await session.run(feeds); // warm-up
    const latencies: number[] = [];
    const start = performance.now();
    while (performance.now() - start < seconds * 1000) {
      const t0 = performance.now();
      await session.run(feeds);
      latencies.push(performance.now() - t0);
    }
    return stats(latencies, (performance.now() - start) / 1000);
  } finally {
    await session.release();
  }
}

async function pipelineRun(config: Config, logger: Logger, folder: string, seconds: number) {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'inceptiond-bench-'));
  const port = await freePort();
  const source = { ...config.sources[0]!, id: 'bench', backend: 'files' as const, intervalMs: 0, files: { path: folder, loop: true } };
  const benchConfig: Config = {
    ...config,
    stateDir,
    sources: [source],
    mqtt: { ...config.mqtt, url: `mqtt://127.0.0.1:${port}`, embeddedBroker: { enabled: true, host: '127.0.0.1', port } },
    http: { ...config.http, enabled: false },
    metrics: { intervalSec: 0 },
  };
  const { Daemon } = await import('../daemon/index.js');
  const daemon = await Daemon.start(benchConfig, logger);
  try {
    // Measure from the first Result on, so model load and warm-up are not counted.
    await daemon.waitForResults(1);
    const startCount = daemon.resultCount;
    let rssMax = 0;
    const rssTimer = setInterval(() => (rssMax = Math.max(rssMax, process.memoryUsage.rss())), 250);
    const start = performance.now();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const elapsed = (performance.now() - start) / 1000;
    clearInterval(rssTimer);
    const runs = daemon.resultCount - startCount;
    const snapshot = daemon.metricsPeek();
    return {
      runs,
      seconds: round2(elapsed),
      perSecond: round2(runs / elapsed),
      latencyMs: snapshot.latencyMs.inference,
      totalLatencyMs: { p50: snapshot.latencyMs.total.p50, p99: snapshot.latencyMs.total.p99 },
      eventLoopDelayP99Ms: snapshot.eventLoopDelayMs.p99,
      rssMax,
    };
  } finally {
    await daemon.stop('bench finished');
    await rm(stateDir, { recursive: true, force: true });
  }
}

export async function runBench(config: Config, logger: Logger, seconds: number): Promise<BenchReport> {
  const model = await prepareModelIsolated(config, logger, { logFd: 2 });
  const folder = await imagesFolder(config);
  const first = (await readdir(folder)).filter((f) => /\.(jpe?g|png|webp)$/i.test(f)).sort()[0];
  if (!first) throw new Error(`no images in ${folder} to benchmark with`);
  const prepared = await createPreprocessor(model.manifest.input)(await readFile(path.join(folder, first)));

  const rawBefore = await rawLoop(model, config, prepared.tensor.data, prepared.tensor.dims, seconds / 2);
  const rssAfterRaw = process.memoryUsage.rss();
  const pipeline = await pipelineRun(config, logger, folder, seconds);
  const rawAfter = await rawLoop(model, config, prepared.tensor.data, prepared.tensor.dims, seconds / 2);
  const raw: RateStats = {
    ...rawAfter,
    runs: rawBefore.runs + rawAfter.runs,
    seconds: rawBefore.seconds + rawAfter.seconds,
    perSecond: round2((rawBefore.runs + rawAfter.runs) / (rawBefore.seconds + rawAfter.seconds)),
  };
  return {
    model: { name: model.manifest.name, precision: model.precision, synthetic: model.synthetic, path: model.modelPath },
    provider: config.inference.executionProviders[0] ?? 'cpu',
    threads: config.inference.threads,
    raw,
    pipeline: {
      runs: pipeline.runs,
      seconds: pipeline.seconds,
      perSecond: pipeline.perSecond,
      latencyMs: pipeline.latencyMs,
      totalLatencyMs: pipeline.totalLatencyMs,
      eventLoopDelayP99Ms: pipeline.eventLoopDelayP99Ms,
    },
    pipelineToRaw: Math.round((pipeline.perSecond / raw.perSecond) * 1000) / 1000,
    rssMB: { afterRaw: Math.round(rssAfterRaw / 2 ** 20), pipelineMax: Math.round(pipeline.rssMax / 2 ** 20) },
  };
}

export async function benchCommand(config: Config, logger: Logger, opts: BenchOptions): Promise<void> {
  const report = await runBench(config, logger, opts.seconds);
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    return;
  }
  const r = report;
  process.stdout.write(
    [
      `model     ${r.model.name} (${r.model.precision}${r.model.synthetic ? ', synthetic weights' : ''}) ${r.model.path}`,
      `provider  ${r.provider}, ${r.threads} intra-op threads`,
      `raw       ${r.raw.perSecond}/s session.run (p50 ${r.raw.latencyMs.p50} ms, p99 ${r.raw.latencyMs.p99} ms, ${r.raw.runs} runs)`,
      `pipeline  ${r.pipeline.perSecond}/s Results (inference p50 ${r.pipeline.latencyMs.p50} ms, total p50 ${r.pipeline.totalLatencyMs.p50} ms, p99 ${r.pipeline.totalLatencyMs.p99} ms)`,
      `ratio     pipeline/raw = ${r.pipelineToRaw}`,
      `event loop delay p99 while inferring: ${r.pipeline.eventLoopDelayP99Ms} ms`,
      `RSS       ${r.rssMB.afterRaw} MB after the raw loop, ${r.rssMB.pipelineMax} MB max during the pipeline (one process: includes the raw session's heap)`,
      '',
    ].join('\n'),
  );
}
