import { backendProblems } from '../capture/index.js';
import { ConfigError, invalidValue, type ConfigProblem } from './errors.js';
import { sourceEntrySchema } from './schema.js';
import type { CaptureConfig, SourceConfig, SourceStages } from './types.js';
import { checkAgainstSchema } from './validate.js';

/** What a `sources` entry inherits: the capture settings and the stages' defaults. */
export type SourceDefaults = { capture: CaptureConfig } & SourceStages;

/** The id of the single source made from `capture` when `sources` is empty. */
export const DEFAULT_SOURCE_ID = 'camera';

/**
 * The effective list of sources: each `sources` entry merged over `capture` (so an entry names only what
 * differs), or one source "camera" made of `capture` when the list is empty. Also checks what only makes
 * sense per source: unique ids and the input each backend needs. Throws ConfigError listing every problem.
 * Idempotent: resolving already-resolved sources gives the same list.
 */
export function resolveSources(config: SourceDefaults & { sources: readonly unknown[] }): SourceConfig[] {
  const { resolved, problems } = collectSources(config, config.sources);
  if (problems.length > 0) throw new ConfigError(problems);
  return resolved;
}

/** As resolveSources, but returns the problems instead of throwing (the loader merges them with others). */
export function collectSources(
  defaults: SourceDefaults,
  entries: readonly unknown[],
): { resolved: SourceConfig[]; problems: ConfigProblem[] } {
  const problems: ConfigProblem[] = [];
  const stages = { publish: defaults.publish, motion: defaults.motion, snapshot: defaults.snapshot };
  if (entries.length === 0) {
    const only: SourceConfig = { id: DEFAULT_SOURCE_ID, ...structuredClone(defaults.capture), ...structuredClone(stages) };
    problems.push(...checkBackendInput(only, 'capture'));
    return { resolved: [only], problems };
  }

  const resolved: SourceConfig[] = [];
  const seen = new Map<string, number>();
  entries.forEach((entry, index) => {
    const at = `sources[${index}]`;
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
      problems.push(invalidValue(at, entry, 'must be an object like {"id": "door", "backend": "ffmpeg", …}'));
      return;
    }
    const check = checkAgainstSchema(
      sourceEntrySchema({ capture: defaults.capture, ...stages }),
      entry as Record<string, unknown>,
      {},
      `${at}.`,
    );
    problems.push(...check.problems);
    if (check.problems.length > 0) return;
    const source = check.values as unknown as SourceConfig;
    const first = seen.get(source.id);
    if (first !== undefined) {
      problems.push(invalidValue(`${at}.id`, source.id, `duplicates the id of sources[${first}]`));
      return;
    }
    seen.set(source.id, index);
    problems.push(...checkBackendInput(source, at));
    resolved.push(source);
  });
  return { resolved, problems };
}

/**
 * What the source's backend cannot run with beyond per-key ranges (required keys, checks across keys: from
 * capture's registry), and retry delays in order. `at` is `capture` or `sources[i]`.
 */
function checkBackendInput(source: SourceConfig, at: string): ConfigProblem[] {
  const problems = backendProblems(source.backend, source[source.backend]).map((p) =>
    invalidValue(`${at}.${source.backend}.${p.key}`, p.value, p.reason),
  );
  if (source.retryInitialMs > source.retryMaxMs) {
    problems.push(invalidValue(`${at}.retryInitialMs`, source.retryInitialMs, `must not exceed retryMaxMs (${source.retryMaxMs})`));
  }
  return problems;
}
