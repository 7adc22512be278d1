/**
 * What a reload (SIGHUP, `systemctl reload`) can change while the daemon runs, and what waits for a
 * restart. Live: what each frame reads (top-k, threshold), the sources (added, removed, changed —
 * a changed source is restarted on its own), the log level, the metrics period and the health bounds.
 * Everything else — the model, the execution providers, the broker connection, the state directory —
 * is named as needing a restart, and the running value stays.
 */
import type { Config, SourceConfig } from '../config/index.js';

/** Dotted key prefixes that apply without a restart. */
const LIVE = ['inference.topK', 'inference.threshold', 'log.level', 'metrics.intervalSec', 'health.', 'capture.', 'sources', 'runtimeDir'];

export interface ReloadPlan {
  /** Changed keys that take effect now. */
  live: string[];
  /** Changed keys that need a restart (their running values stay). */
  restartNeeded: string[];
  sources: { added: SourceConfig[]; removed: string[]; changed: SourceConfig[] };
  /** The configuration to run with: `next` for live keys, `current` for the rest. */
  effective: Config;
}

export function planReload(current: Config, next: Config): ReloadPlan {
  const before = flatten(current);
  const after = flatten(next);
  const keys = [...new Set([...before.keys(), ...after.keys()])].filter((k) => before.get(k) !== after.get(k)).sort();
  const isLive = (key: string) => LIVE.some((p) => key === p || key.startsWith(p.endsWith('.') ? p : `${p}.`) || key.startsWith(`${p}[`));
  const live = keys.filter(isLive);
  const restartNeeded = keys.filter((k) => !isLive(k));

  const byId = (list: SourceConfig[]) => new Map(list.map((s) => [s.id, s]));
  const old = byId(current.sources);
  const fresh = byId(next.sources);
  const added = next.sources.filter((s) => !old.has(s.id));
  const removed = current.sources.filter((s) => !fresh.has(s.id)).map((s) => s.id);
  // runtimeDir reaches the sources (webcam captures go there): a change restarts them.
  const runtimeChanged = current.runtimeDir !== next.runtimeDir;
  const changed = next.sources.filter((s) => old.has(s.id) && (runtimeChanged || JSON.stringify(old.get(s.id)) !== JSON.stringify(s)));

  const effective: Config = {
    ...current,
    runtimeDir: next.runtimeDir,
    capture: next.capture,
    sources: next.sources,
    inference: { ...current.inference, topK: next.inference.topK, threshold: next.inference.threshold },
    log: next.log,
    metrics: next.metrics,
    health: next.health,
  };
  return { live, restartNeeded, sources: { added, removed, changed }, effective };
}

/** Leaf values by dotted key (arrays of objects by index, other arrays as one value). */
function flatten(value: unknown, prefix = '', out = new Map<string, string>()): Map<string, string> {
  if (Array.isArray(value) && value.some((v) => typeof v === 'object' && v !== null)) {
    value.forEach((v, i) => {
      flatten(v, `${prefix}[${i}]`, out);
    });
    if (value.length === 0) out.set(prefix, '[]');
  } else if (typeof value === 'object' && value !== null && !Array.isArray(value) && Object.keys(value).length > 0) {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else {
    out.set(prefix, JSON.stringify(value));
  }
  return out;
}
