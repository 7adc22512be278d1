/**
 * What a reload (SIGHUP, `systemctl reload`) can change while the daemon runs, and what waits for a
 * restart. Live: what each frame reads (top-k, threshold, each source's publish policy, motion gating
 * and snapshots), the sources (added, removed, changed — a source whose capture changed is restarted on
 * its own), the log level, the metrics period, the health bounds, control and Home Assistant discovery.
 * Everything else — the model, the execution providers, the broker connection, the state directory —
 * is named as needing a restart, and the running value stays.
 */
import type { Config, SourceConfig } from '../config/index.js';

/** Dotted key prefixes that apply without a restart. */
const LIVE = [
  'inference.topK',
  'inference.threshold',
  'log.level',
  'metrics.intervalSec',
  'health.',
  'capture.',
  'sources',
  'runtimeDir',
  'publish.',
  'motion.',
  'snapshot.',
  'control.',
  'homeassistant.',
];

/** Per-source keys the pipeline reads per frame: a change applies without restarting the camera. */
const STAGE_KEYS = ['publish', 'motion', 'snapshot'] as const;

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
  const changed = next.sources.filter((s) => old.has(s.id) && (runtimeChanged || captureJson(old.get(s.id)!) !== captureJson(s)));

  const effective: Config = {
    ...current,
    runtimeDir: next.runtimeDir,
    capture: next.capture,
    sources: next.sources,
    inference: { ...current.inference, topK: next.inference.topK, threshold: next.inference.threshold },
    log: next.log,
    metrics: next.metrics,
    health: next.health,
    publish: next.publish,
    motion: next.motion,
    snapshot: next.snapshot,
    control: next.control,
    homeassistant: next.homeassistant,
  };
  return { live, restartNeeded, sources: { added, removed, changed }, effective };
}

/** A source's settings without its stages: what its capture depends on. */
function captureJson(source: SourceConfig): string {
  const capture: Record<string, unknown> = { ...source };
  for (const key of STAGE_KEYS) delete capture[key];
  return JSON.stringify(capture);
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
