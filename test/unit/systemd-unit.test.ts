/**
 * The service file: hardened to an exposure of 2.5 or less by systemd's own measure, without losing
 * what the daemon needs (the cameras, JIT memory, /proc/cpuinfo, reload, the notify protocol); and the
 * sysusers.d file that creates the user it runs as.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { root } from '../helpers/build.js';
import { SKIP, systemdAnalyze } from '../helpers/tools.js';
import { serviceUnitSettings } from '../../src/ops/index.js';
import { which } from '../helpers/which.js';

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

  it('passes systemd-analyze verify without a warning', (ctx) => {
    const analyze = systemdAnalyze();
    ctx.skip(!analyze, SKIP.systemdAnalyze);
    const run = spawnSync(analyze!, ['verify', unitPath], { encoding: 'utf8' });
    expect(run.stderr + run.stdout).toBe('');
    expect(run.status).toBe(0);
  });
});

const sysusersPath = path.join(root, 'systemd', 'inceptiond.sysusers.conf');

/** sysusers.d lines without comments, split into fields (a quoted GECOS is one field). */
function sysusersLines(text: string): string[][] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => [...l.matchAll(/"[^"]*"|\S+/g)].map((m) => m[0]));
}

/**
 * systemd-sysusers --dry-run on `file` against an empty root (no users; a `video` group, as Debian has):
 * exit status and what it says. Paths are absolute: with --root, a relative one is looked up inside it.
 */
function sysusersDryRun(tool: string, file: string): { status: number | null; out: string } {
  const fakeRoot = mkdtempSync(path.join(tmpdir(), 'inceptiond-sysusers-'));
  try {
    mkdirSync(path.join(fakeRoot, 'etc'));
    writeFileSync(path.join(fakeRoot, 'etc', 'group'), 'video:x:44:\n');
    writeFileSync(path.join(fakeRoot, 'etc', 'passwd'), '');
    const run = spawnSync(tool, ['--dry-run', '--root', fakeRoot, path.resolve(file)], { encoding: 'utf8' });
    return { status: run.status, out: run.stderr + run.stdout };
  } finally {
    rmSync(fakeRoot, { recursive: true, force: true });
  }
}

describe('systemd/inceptiond.sysusers.conf', () => {
  const text = readFileSync(sysusersPath, 'utf8');

  it('creates the system user the unit runs as, in the video group the unit adds', () => {
    const lines = sysusersLines(text);
    // u NAME ID GECOS HOME: a system user with its own group of the same name (the unit's Group=).
    expect(lines).toContainEqual(['u', 'inceptiond', '-', expect.stringMatching(/^".+"$/), '/var/lib/inceptiond']);
    expect(lines).toContainEqual(['m', 'inceptiond', 'video']);
    for (const l of lines) expect(['u', 'g', 'm', 'r']).toContain(l[0]);
    expect(values('User')).toEqual(['inceptiond']);
    expect(values('Group')).toEqual(['inceptiond']);
    expect(values('SupplementaryGroups')).toEqual(['video']);
    // The home is the unit's StateDirectory=.
    expect(values('StateDirectory')).toEqual(['inceptiond']);
  });

  it('is accepted by systemd-sysusers --dry-run (and a broken file is not)', (ctx) => {
    const tool = which('systemd-sysusers');
    ctx.skip(!tool, 'needs systemd-sysusers (Debian package systemd)');
    const ok = sysusersDryRun(tool!, sysusersPath);
    expect(ok.status).toBe(0);
    expect(ok.out).not.toMatch(/fail|unknown|ignoring|invalid/i);
    expect(ok.out).toMatch(/Creating user '?inceptiond'?/);
    expect(ok.out).not.toMatch(/Creating group '?video'?/); // the existing group is used

    const dir = mkdtempSync(path.join(tmpdir(), 'inceptiond-sysusers-bad-'));
    try {
      const bad = path.join(dir, 'bad.conf');
      writeFileSync(bad, text.replace('u     inceptiond -', 'u     inceptiond notanid'));
      const refused = sysusersDryRun(tool!, bad);
      expect(refused.status).not.toBe(0);
      expect(refused.out).toMatch(/bad\.conf:\d+/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('serviceUnitSettings: the process settings bench and the measuring scripts start under', () => {
  it('reads every Environment= line of the shipped unit, quoted or not, and its CPUSchedulingPolicy=', () => {
    const { env, scheduling } = serviceUnitSettings();
    // Each Environment= line as the file has it, "K=V" or K=V, split at the first '='.
    const expected = Object.fromEntries(
      values('Environment').map((v) => {
        const kv = v.replace(/^"(.*)"$/, '$1');
        return [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)];
      }),
    );
    expect(Object.keys(expected).length).toBeGreaterThan(3);
    expect(env).toEqual(expected);
    expect(env.NODE_OPTIONS).toMatch(/^--\S+( --\S+)*$/); // unquoted: several flags in one value
    expect(scheduling).toBe(values('CPUSchedulingPolicy')[0]);
  });

  it('parses a unit without a policy, with quoted values holding spaces and "=", and ignores comments', () => {
    const text = [
      '[Service]',
      '# Environment=COMMENTED=1',
      'Environment=A=1',
      'Environment="B=x y=z"',
      'EnvironmentFile=-/etc/x.env',
      'ExecStart=/usr/bin/node cli.js run',
    ].join('\n');
    expect(serviceUnitSettings(text)).toEqual({ env: { A: '1', B: 'x y=z' } });
    expect(serviceUnitSettings(`${text}\nCPUSchedulingPolicy=idle\n`).scheduling).toBe('idle');
  });
});
