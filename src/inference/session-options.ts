import type { InferenceSession } from 'onnxruntime-node';
import type { SessionSettings } from './types.js';

/**
 * ORT session options for one provider attempt. Kept pure so the daemon's choices (threads, spinning,
 * no silent CPU fallback) are visible in one place.
 */
export function sessionOptionsFor(
  settings: SessionSettings,
  provider: string,
  overrides: { graphOptimizationLevel?: SessionSettings['graphOptimizationLevel']; optimizedModelFilePath?: string } = {},
): InferenceSession.SessionOptions {
  const spinning = settings.allowSpinning ? '1' : '0';
  const session: Record<string, unknown> = {
    // Idle pools otherwise spin between frames, burning a core on a board that infers once a second.
    intra_op: { allow_spinning: spinning },
    inter_op: { allow_spinning: spinning },
  };
  // For an accelerator, a partial offload must be an error we can fall back from, not a silent CPU run.
  if (provider !== 'cpu') session.disable_cpu_ep_fallback = '1';
  const options: InferenceSession.SessionOptions = {
    executionProviders: [provider],
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: overrides.graphOptimizationLevel ?? settings.graphOptimizationLevel,
    // ORT prints its own plain-text lines on stderr, which break the JSON-lines log; its warnings
    // (e.g. that a saved optimized model is hardware-specific) concern things we key and check ourselves.
    logSeverityLevel: 3,
    extra: { session },
  };
  // 0 leaves ORT's default (one thread per physical core).
  if (settings.threads > 0) options.intraOpNumThreads = settings.threads;
  if (overrides.optimizedModelFilePath) options.optimizedModelFilePath = overrides.optimizedModelFilePath;
  return options;
}

/** Provider names as the binding spells them, in order, without duplicates. */
export function normalizeProviders(names: readonly string[]): string[] {
  return [...new Set(names.map((n) => n.trim().toLowerCase()).filter((n) => n.length > 0))];
}
