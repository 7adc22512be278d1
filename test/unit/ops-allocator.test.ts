import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkAllocator } from '../../src/commands/doctor-action.js';
import { describeAllocator, memoryAllocator } from '../../src/ops/index.js';
import { unitEnvironment } from '../helpers/systemd-unit.js';
import { jemallocPath, nodeProcessMaps, SKIP } from '../helpers/tools.js';

const unitEnv = unitEnvironment();

/** A Node process started with `env`, which must run to its end: its /proc/self/maps and stderr. */
function childWith(env: NodeJS.ProcessEnv): { maps: string; stderr: string } {
  const child = nodeProcessMaps(env);
  expect(child.status, child.stderr).toBe(0);
  return child;
}

const jemalloc = jemallocPath();
const tmp = mkdtempSync(path.join(os.tmpdir(), 'inceptiond-allocator-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('memoryAllocator', () => {
  const glibcMaps = '7f0000000000-7f0000020000 r-xp 00000000 08:01 123 /usr/lib/x86_64-linux-gnu/libc.so.6\n';
  const jemallocMaps = `${glibcMaps}7f1000000000-7f1000010000 r-xp 00000000 08:01 124 /usr/lib/aarch64-linux-gnu/libjemalloc.so.2\n`;
  const env = { MALLOC_CONF: 'narenas:1', MALLOC_ARENA_MAX: '1', MALLOC_MMAP_THRESHOLD_: '65536', HOME: '/root' };

  it("names the preloaded allocator and only the settings it reads (glibc's are inert under it)", () => {
    const info = memoryAllocator({ ...env, LD_PRELOAD: 'libjemalloc.so.2' }, jemallocMaps);
    expect(info).toEqual({ name: 'jemalloc', settings: { MALLOC_CONF: 'narenas:1' }, notLoaded: [] });
    expect(describeAllocator(info)).toBe('jemalloc (MALLOC_CONF=narenas:1)');
  });

  it("without one, glibc's malloc with glibc's settings; elsewhere than Linux, no claim", () => {
    expect(memoryAllocator(env, glibcMaps)).toEqual({
      name: 'glibc',
      settings: { MALLOC_ARENA_MAX: '1', MALLOC_MMAP_THRESHOLD_: '65536' },
      notLoaded: [],
    });
    expect(memoryAllocator({}, glibcMaps).settings).toEqual({});
    expect(memoryAllocator({ LD_PRELOAD: 'libjemalloc.so.2' }, null)).toEqual({ name: 'system', settings: {}, notLoaded: [] });
  });

  it('names each LD_PRELOAD entry that is not mapped: ld.so could not load it', () => {
    const info = memoryAllocator({ LD_PRELOAD: 'libjemalloc.so.2:/opt/x/libfoo.so libbar.so' }, glibcMaps);
    expect(info.name).toBe('glibc');
    expect(info.notLoaded).toEqual(['libjemalloc.so.2', '/opt/x/libfoo.so', 'libbar.so']);
  });

  it.runIf(process.platform === 'linux')(
    'a Node process with LD_PRELOAD of a library that is not installed runs on glibc and says which entry failed',
    () => {
      const missing = 'libinceptiond-no-such-malloc.so.0';
      const { maps, stderr } = childWith({ LD_PRELOAD: missing, MALLOC_ARENA_MAX: '1' });
      expect(stderr).toContain(missing); // ld.so's own complaint; the process carries on
      const info = memoryAllocator({ LD_PRELOAD: missing, MALLOC_ARENA_MAX: '1' }, maps);
      expect(info).toEqual({ name: 'glibc', settings: { MALLOC_ARENA_MAX: '1' }, notLoaded: [missing] });
      const check = checkAllocator({ LD_PRELOAD: missing }, maps);
      expect(check.ok).toBe(false);
      expect(check.detail).toContain('libjemalloc2');
      expect(checkAllocator({}, maps)).toMatchObject({ ok: true, detail: 'glibc', data: { allocator: 'glibc' } });
    },
  );

  it("a Node process with the unit's allocator environment runs on jemalloc, which accepts the unit's MALLOC_CONF", (ctx) => {
    ctx.skip(!jemalloc, SKIP.jemalloc);
    expect(unitEnv.LD_PRELOAD).toBe('libjemalloc.so.2');
    expect(unitEnv.MALLOC_CONF).toBeDefined();
    const { maps, stderr } = childWith(unitEnv);
    // jemalloc prints "<jemalloc>: Invalid conf pair" and ignores a misspelt option: the unit's must all take.
    expect(stderr).toBe('');
    const info = memoryAllocator(unitEnv, maps);
    expect(info).toEqual({ name: 'jemalloc', settings: { MALLOC_CONF: unitEnv.MALLOC_CONF }, notLoaded: [] });
    expect(checkAllocator(unitEnv, maps)).toMatchObject({ ok: true, data: { allocator: 'jemalloc' } });
    // A path that is a symlink to the library counts as loaded (maps shows the file it points to).
    const link = path.join(tmp, 'libjemalloc.so');
    symlinkSync(jemalloc!, link);
    const viaLink = childWith({ LD_PRELOAD: link });
    expect(memoryAllocator({ LD_PRELOAD: link }, viaLink.maps)).toMatchObject({ name: 'jemalloc', notLoaded: [] });
  });
});
