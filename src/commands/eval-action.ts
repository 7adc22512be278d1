// What `inceptiond model eval` does (loaded when it runs): a candidate model against a reference, with
// the daemon's session options.
import * as ort from 'onnxruntime-node';
import type { Logger } from 'pino';
import type { Config } from '../config/index.js';
import { normalizeProviders, sessionOptionsFor } from '../inference/session-options.js';
import { evaluateModels, type EvalReport } from '../model/index.js';
import { listImageFiles, requireFile } from '../util/index.js';

export interface EvalCommandOptions {
  ref: string;
  cand: string;
  images: string;
  repeats?: number;
  json: boolean;
}

/** The first configured execution provider this onnxruntime-node build has, as the daemon would pick it (cpu as a last resort). */
function daemonProvider(config: Config): string {
  const supported = new Set(ort.listSupportedBackends().map((b) => b.name.toLowerCase()));
  return normalizeProviders(config.inference.executionProviders).find((p) => supported.has(p)) ?? 'cpu';
}

export async function evalCommand(config: Config, logger: Logger, opts: EvalCommandOptions): Promise<EvalReport> {
  await requireFile(opts.ref, 'reference model');
  await requireFile(opts.cand, 'candidate model');
  const images = await listImageFiles(opts.images, 'image folder');
  const provider = daemonProvider(config);
  const sessionOptions = sessionOptionsFor(
    {
      modelPath: opts.ref,
      executionProviders: [provider],
      threads: config.inference.threads,
      allowSpinning: config.inference.allowSpinning,
      graphOptimizationLevel: config.inference.graphOptimizationLevel,
    },
    provider,
  );
  const report = await evaluateModels({
    ref: opts.ref,
    cand: opts.cand,
    images,
    ...(opts.repeats !== undefined ? { repeats: opts.repeats } : {}),
    sessionOptions,
    logger,
    progress: !opts.json,
  });
  if (opts.json) {
    const { images: n, top1Agreement, top5Agreement, sqnrDb, refMs, candMs, latencyRatio } = report;
    // JSON has no Infinity: identical outputs give sqnrDb null.
    process.stdout.write(
      `${JSON.stringify({ images: n, top1Agreement, top5Agreement, sqnrDb: Number.isFinite(sqnrDb) ? sqnrDb : null, refMs, candMs, latencyRatio })}\n`,
    );
  } else {
    const pct = (x: number) => `${(x * 100).toFixed(1)} %`;
    process.stdout.write(
      [
        `reference: ${opts.ref}`,
        `candidate: ${opts.cand}`,
        `images: ${report.images}`,
        `top-1 agreement: ${pct(report.top1Agreement)}`,
        `top-5 agreement: ${pct(report.top5Agreement)}`,
        `output SQNR: ${Number.isFinite(report.sqnrDb) ? `${report.sqnrDb.toFixed(1)} dB` : 'identical outputs'}`,
        `latency (median session.run, ${provider}, ${config.inference.threads} thread(s)): ` +
          `reference ${report.refMs.toFixed(2)} ms, candidate ${report.candMs.toFixed(2)} ms, ratio ${report.latencyRatio.toFixed(3)}`,
        '',
      ].join('\n'),
    );
  }
  return report;
}
