/**
 * The service file: hardened to an exposure of 2.5 or less by systemd's own measure, without losing
 * what the daemon needs (the cameras, JIT memory, /proc/cpuinfo, reload, the notify protocol).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { root } from '../helpers/build.js';
import { SKIP, systemdAnalyze } from '../helpers/tools.js';

const unitPath = path.join(root, 'systemd', 'inceptiond.service');
const unit = readFileSync(unitPath, 'utf8');
const settings = unit
  .split('\n')
  .filter((l) => /^[A-Za-z]+=/.test(l))
  .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as const);
const values = (key: string) => settings.filter(([k]) => k === key).map(([, v]) => v);

describe('systemd/inceptiond.service', () => {
  it('scores an exposure of 2.5 or less in systemd-analyze security', (ctx) => {
    const analyze = systemdAnalyze();
    ctx.skip(!analyze, SKIP.systemdAnalyze);
    const out = execFileSync(analyze!, ['security', '--offline=yes', unitPath], { encoding: 'utf8' });
    const exposure = Number(/Overall exposure level for inceptiond\.service: ([\d.]+)/.exec(out)?.[1]);
    expect(exposure).toBeLessThanOrEqual(2.5);
  });

  it('keeps what the daemon needs: cameras, JIT memory, /proc/cpuinfo, reload and notify', () => {
    expect(values('DeviceAllow')).toContain('char-video4linux rw');
    expect(values('SupplementaryGroups')).toEqual(['video']);
    for (const key of ['PrivateDevices', 'MemoryDenyWriteExecute', 'ProcSubset', 'PrivateNetwork']) expect(values(key)).toEqual([]);
    expect(values('ExecReload')).toEqual(['/bin/kill -HUP $MAINPID']);
    expect(values('Type')).toEqual(['notify']);
    // the systemd-notify fallback sends from its own pid when unix-dgram is not built
    expect(values('NotifyAccess')).toEqual(['all']);
    expect(values('RestartPreventExitStatus')).toEqual(['78']);
  });
});
