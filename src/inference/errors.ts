import type { ProviderAttempt } from './types.js';

/** No execution provider in the configured list could create a session. */
export class NoExecutionProviderError extends Error {
  override readonly name = 'NoExecutionProviderError';
  constructor(
    message: string,
    readonly attempts: ProviderAttempt[],
  ) {
    super(message);
  }
}

/** The session loaded but cannot be used (missing input/output name, non-float input, ...). */
export class ModelLoadError extends Error {
  override readonly name = 'ModelLoadError';
}

/** The inference worker died (native crash, uncaught error, terminated); pending runs fail with it. */
export class WorkerCrashedError extends Error {
  override readonly name = 'WorkerCrashedError';
}

/** The worker crashed too often recently; runs fail fast until the restart window has passed. */
export class RestartLimitError extends Error {
  override readonly name = 'RestartLimitError';
}

/** `session.run` failed for this input; the worker and session are still fine. */
export class InferenceRunError extends Error {
  override readonly name = 'InferenceRunError';
}

/** The tensor does not fit the model input (length or dims); nothing was sent to the worker. */
export class InvalidTensorError extends Error {
  override readonly name = 'InvalidTensorError';
}

/** `run` after `close()`, or a run still queued when the engine closed. */
export class EngineClosedError extends Error {
  override readonly name = 'EngineClosedError';
  constructor() {
    super('inference engine is closed');
  }
}

/**
 * ORT's native errors start with where they were raised and the failed check:
 * "/onnxruntime_src/…/webgpu_context.cc:136 onnxruntime::…::<lambda()> adapter_result.status == … was
 * false. Failed to get a WebGPU adapter: No supported adapters". A user needs the last part.
 */
export function ortReason(message: string): string {
  const text = message.trim();
  const located = /^\S+\.(?:cc|cpp|h):\d+ /.exec(text);
  if (!located) return text;
  const check = text.indexOf(' was false. ');
  return check >= 0 ? text.slice(check + ' was false. '.length).trim() : text;
}
