// What `inceptiond classify IMAGE...` does (loaded when it runs): one-shot classification with the
// daemon's model and session options.
import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { Config } from '../config/index.js';
import { InferenceEngine, topLabels, type LabelScore } from '../inference/index.js';
import { prepareModelIsolated, sessionSettingsFor } from '../daemon/model-setup.js';
import { round2 } from '../util/index.js';
import { createPreprocessor, FrameDecodeError, FrameTooLargeError } from '../vision/index.js';

export interface ClassifyOptions {
  images: string[];
  /** ONNX model overriding model.path (its manifest is found beside it). */
  model?: string;
  top?: number;
  json: boolean;
}

export async function classifyCommand(config: Config, logger: Logger, opts: ClassifyOptions): Promise<void> {
  const effective: Config = opts.model
    ? { ...config, model: { ...config.model, path: opts.model, manifest: '', precision: 'auto' } }
    : config;
  const model = await prepareModelIsolated(effective, logger, { logFd: 2 });
  if (model.synthetic && !opts.json) {
    process.stderr.write('note: this model has synthetic (seeded) weights: its labels mean nothing\n');
  }
  const engine = await InferenceEngine.create(sessionSettingsFor(effective, model), logger);
  const preprocess = createPreprocessor(model.manifest.input);
  let failed = 0;
  try {
    for (const image of opts.images) {
      let labels: LabelScore[];
      let inferenceMs: number;
      try {
        const prepared = await preprocess(await readFile(image));
        const out = await engine.run(prepared.tensor);
        inferenceMs = out.inferenceMs;
        labels = topLabels(out.scores, {
          k: opts.top ?? config.inference.topK,
          threshold: config.inference.threshold,
          labels: model.labels,
          activation: model.manifest.output.activation,
        });
      } catch (err) {
        if (!(err instanceof FrameDecodeError || err instanceof FrameTooLargeError || isFsError(err))) throw err;
        failed += 1;
        if (opts.json) process.stdout.write(`${JSON.stringify({ image, error: (err as Error).message })}\n`);
        else process.stderr.write(`${image}: ${(err as Error).message}\n`);
        continue;
      }
      if (opts.json) {
        process.stdout.write(
          `${JSON.stringify({
            image,
            model: { name: model.manifest.name, precision: model.precision, synthetic: model.synthetic || undefined },
            provider: engine.provider,
            labels,
            inferenceMs: round2(inferenceMs),
          })}\n`,
        );
      } else {
        process.stdout.write(`${image}\n`);
        for (const l of labels) process.stdout.write(`  ${l.score.toFixed(4)}  ${l.label} (${l.index})\n`);
      }
    }
  } finally {
    await engine.close();
  }
  if (failed > 0) process.exitCode = 1;
}

function isFsError(err: unknown): boolean {
  return typeof (err as NodeJS.ErrnoException)?.code === 'string' && typeof (err as NodeJS.ErrnoException).syscall === 'string';
}
