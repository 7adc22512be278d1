import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { canStartUnder, schedulingPolicy, underSchedulingPolicy } from '../../src/ops/index.js';
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

  it('names the policy a process was started under (underSchedulingPolicy)', (ctx) => {
    ctx.skip(!hasChrt(), SKIP.chrt);
    const stat = (policy: string) => {
      const [file, ...args] = underSchedulingPolicy(policy, ['cat', '/proc/self/stat']);
      return spawnSync(file!, args, { encoding: 'utf8' }).stdout;
    };
    expect(schedulingPolicy(stat('batch'))).toBe('batch');
    expect(schedulingPolicy(stat('idle'))).toBe('idle');
    expect(schedulingPolicy(stat('other'))).toBe('other');
  });
});

describe('canStartUnder', () => {
  it('is true where chrt sets the policy, false where chrt fails or is missing', (ctx) => {
    ctx.skip(!hasChrt(), SKIP.chrt);
    expect(canStartUnder('batch')).toBe(true);
    expect(canStartUnder('no-such-policy')).toBe(false);
    const bin = mkdtempSync(path.join(tmpdir(), 'inceptiond-chrt-'));
    const path0 = process.env.PATH;
    try {
      // Refused, as under a seccomp profile without sched_setscheduler; then missing altogether.
      writeFileSync(path.join(bin, 'chrt'), '#!/bin/sh\nexit 1\n', { mode: 0o755 });
      process.env.PATH = `${bin}:${path0}`;
      expect(canStartUnder('batch')).toBe(false);
      process.env.PATH = bin;
      rmSync(path.join(bin, 'chrt'));
      expect(canStartUnder('batch')).toBe(false);
    } finally {
      process.env.PATH = path0;
      rmSync(bin, { recursive: true, force: true });
    }
  });
});
