/** The systemd unit as tests read it: the process environment a daemon under systemd starts with. */
import { serviceUnitSettings } from '../../src/ops/index.js';

/** The unit's Environment= assignments (NODE_OPTIONS too), in file order. */
export function unitEnvironment(): Record<string, string> {
  return serviceUnitSettings().env;
}

/** The unit's `CPUSchedulingPolicy=`, or undefined without one. */
export function unitSchedulingPolicy(): string | undefined {
  return serviceUnitSettings().scheduling;
}
