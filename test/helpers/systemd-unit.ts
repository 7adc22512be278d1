/** The systemd unit as tests read it: the process environment a daemon under systemd starts with. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const unitPath = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'systemd', 'inceptiond.service');

/** The unit's Environment= assignments (NODE_OPTIONS too), in file order. */
export function unitEnvironment(): Record<string, string> {
  const unit = readFileSync(unitPath, 'utf8');
  return Object.fromEntries([...unit.matchAll(/^Environment="?(\w+)=(.*?)"?$/gm)].map(([, k, v]) => [k!, v!]));
}

/** The unit's `CPUSchedulingPolicy=`, or undefined without one. */
export function unitSchedulingPolicy(): string | undefined {
  return /^CPUSchedulingPolicy=(\w+)$/m.exec(readFileSync(unitPath, 'utf8'))?.[1];
}
