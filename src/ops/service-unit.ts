import { readFileSync } from 'node:fs';
import path from 'node:path';
import { projectRoot } from '../config/index.js';

/** The systemd unit the package ships (systemd/inceptiond.service). */
const serviceUnitPath = path.join(projectRoot, 'systemd', 'inceptiond.service');

/**
 * What the unit sets for the daemon's process, beside the command: its environment (the allocator,
 * its settings, NODE_OPTIONS) and its CPU scheduling policy. `inceptiond bench` measures under these,
 * as the daemon runs (docs/ARCHITECTURE.md, "Threads").
 */
export interface ServiceUnitSettings {
  /** `Environment=` assignments in file order, NODE_OPTIONS included. */
  env: Record<string, string>;
  /** `CPUSchedulingPolicy=`, when the unit sets one. */
  scheduling?: string;
}

/** The settings in a unit file's text (the shipped unit's when not given). */
export function serviceUnitSettings(unitText: string = readFileSync(serviceUnitPath, 'utf8')): ServiceUnitSettings {
  // One assignment per line, as the shipped unit writes them: `Environment=K=V` or `Environment="K=V W"`.
  const env = Object.fromEntries([...unitText.matchAll(/^Environment=("?)(\w+)=(.*?)\1$/gm)].map(([, , k, v]) => [k!, v!]));
  const scheduling = /^CPUSchedulingPolicy=(\w+)\s*$/m.exec(unitText)?.[1];
  return scheduling === undefined ? { env } : { env, scheduling };
}
