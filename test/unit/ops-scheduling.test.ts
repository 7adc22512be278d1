import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { schedulingPolicy } from '../../src/ops/index.js';
import { hasChrt, SKIP } from '../helpers/tools.js';

/** A /proc/<pid>/stat line with this command name and policy (field 41), the other fields as Linux writes them. */
function statLine(comm: string, policy: number): string {
  const fields = Array.from({ length: 52 - 2 }, (_, i) => (i === 0 ? 'S' : String(i)));
  fields[41 - 3] = String(policy);
  return `4242 (${comm}) ${fields.join(' ')}\n`;
}

describe('schedulingPolicy', () => {
  it('reads the policy field by its systemd name, after a command name with spaces and parentheses', () => {
    expect(schedulingPolicy(statLine('node', 0))).toBe('other');
    expect(schedulingPolicy(statLine('libvips worker', 3))).toBe('batch');
    expect(schedulingPolicy(statLine('a) (b) 1 2 3', 5))).toBe('idle');
    expect(schedulingPolicy(statLine('rt', 1))).toBe('fifo');
  });

  it('is undefined without a stat line (not Linux)', () => {
    expect(schedulingPolicy(null)).toBeUndefined();
  });

  it('names the policy a process was started under', (ctx) => {
    ctx.skip(!hasChrt(), SKIP.chrt);
    const stat = (args: string[]) => spawnSync('chrt', [...args, 'cat', '/proc/self/stat'], { encoding: 'utf8' }).stdout;
    expect(schedulingPolicy(stat(['--batch', '0']))).toBe('batch');
    expect(schedulingPolicy(stat(['--idle', '0']))).toBe('idle');
    expect(schedulingPolicy(stat(['--other', '0']))).toBe('other');
  });
});
