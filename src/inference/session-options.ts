import type { InferenceSession } from 'onnxruntime-node';
import type { SessionSettings } from './types.js';

/**
 * ORT session options for one provider attempt. Kept pure so the daemon's choices (threads, spinning,
 * no silent CPU fallback) are visible in one place.
 */
export function sessionOptionsFor(
  settings: SessionSettings,
  provider: string,
  overrides: {
    graphOptimizationLevel?: SessionSettings['graphOptimizationLevel'];
    optimizedModelFilePath?: string;
    /** Profile from creation on (the worker ends it after the warm-up run, for the placement report). */
    profileFilePrefix?: string;
    /** Save an accelerator's compiled graph here (ORT EP context, binary embedded in the file). */
    epContextFile?: string;
    /**
     * The session only writes optimizedModelFilePath and is released unrun: no arena, memory pattern or
     * prepacked weights, none of which the saved graph depends on (the file is byte-for-byte the same).
     */
    optimizeOnly?: boolean;
  } = {},
): InferenceSession.SessionOptions {
  const spinning = settings.allowSpinning ? '1' : '0';
  const session: Record<string, unknown> = {
    // Idle pools otherwise spin between frames, burning a core on a board that infers once a second.
    intra_op: { allow_spinning: spinning },
    inter_op: { allow_spinning: spinning },
  };
  // Without CPU fallback, an accelerator that cannot take every node fails to load, and the next
  // provider listed is tried; with it (the default) the leftover nodes run on the CPU and the
  // placement report says which.
  if (provider !== 'cpu' && settings.cpuFallback === false) session.disable_cpu_ep_fallback = '1';
  const providerOptions = settings.providerOptions?.[provider];
  const options: InferenceSession.SessionOptions = {
    executionProviders: [providerOptions ? providerEntry(provider, providerOptions) : provider],
    interOpNumThreads: 1,
    executionMode: 'sequential',
    // Measured with scripts/measure-daemon.mjs (README "Daemon memory"): turning ORT's CPU arena or the
    // memory pattern off saves no resident memory for this one fixed-shape model (with the arena off the
    // intermediate tensors are allocated and freed on every run instead), and disabling weight
    // prepacking costs 40 % of the rate. So both stay on, explicitly.
    enableCpuMemArena: true,
    enableMemPattern: true,
    graphOptimizationLevel: overrides.graphOptimizationLevel ?? settings.graphOptimizationLevel,
    // ORT prints its own plain-text lines on stderr, which break the JSON-lines log; its warnings
    // (e.g. that a saved optimized model is hardware-specific) concern things we key and check ourselves.
    logSeverityLevel: 3,
    extra: { session },
  };
  // 0 leaves ORT's default (one thread per physical core).
  if (settings.threads > 0) options.intraOpNumThreads = settings.threads;
  if (overrides.optimizedModelFilePath) options.optimizedModelFilePath = overrides.optimizedModelFilePath;
  if (overrides.optimizeOnly) {
    options.enableCpuMemArena = false;
    options.enableMemPattern = false;
    session.disable_prepacking = '1';
  }
  if (overrides.profileFilePrefix) {
    options.enableProfiling = true;
    options.profileFilePrefix = overrides.profileFilePrefix;
  }
  if (overrides.epContextFile) {
    (options.extra as Record<string, unknown>).ep = {
      context_enable: '1',
      context_file_path: overrides.epContextFile,
      context_embed_mode: '1',
    };
  }
  return options;
}

/**
 * `{name, ...options}` as the binding takes it: option values as strings (ORT parses them itself and
 * rejects unknown names), lists kept as lists (WebGPU's forceCpuNodeNames).
 */
function providerEntry(name: string, options: Record<string, string | number | string[]>): InferenceSession.ExecutionProviderConfig {
  const entry: Record<string, string | string[]> = {};
  for (const [key, value] of Object.entries(options)) entry[key] = typeof value === 'number' ? String(value) : value;
  return { ...entry, name } as InferenceSession.ExecutionProviderConfig;
}

/** Provider names as the binding spells them, in order, without duplicates. */
export function normalizeProviders(names: readonly string[]): string[] {
  return [...new Set(names.map((n) => n.trim().toLowerCase()).filter((n) => n.length > 0))];
}
