import { readFileSync, realpathSync } from 'node:fs';
import path from 'node:path';

/**
 * Which malloc the process runs on, and with which settings. The unit and the image preload jemalloc
 * (`LD_PRELOAD=libjemalloc.so.2`) because glibc's malloc held under 150 MB only by settings that cost
 * about a seventh of the frame rate (docs/ARCHITECTURE.md, "Threads"); where the library is missing,
 * ld.so prints one line and carries on with glibc, whose settings are still in the environment. Nothing
 * else says which of the two a daemon got, hence this.
 */
export interface AllocatorInfo {
  /** `glibc` on Linux without a preloaded malloc; `system` elsewhere (not Linux, or /proc unreadable). */
  name: 'jemalloc' | 'mimalloc' | 'tcmalloc' | 'glibc' | 'system';
  /** The environment variables that tune the allocator in use, as set (only those present), by name. */
  settings: Record<string, string>;
  /** LD_PRELOAD entries that are not mapped: ld.so could not load them (not installed). */
  notLoaded: string[];
}

/** Each allocator: the file ld.so maps for it, and which environment variables tune it. */
const PRELOADABLE = [
  { name: 'jemalloc', file: /\/libjemalloc\.so[.\d]*$/, env: /^MALLOC_CONF$/ },
  { name: 'mimalloc', file: /\/libmimalloc\.so[.\d]*$/, env: /^MIMALLOC_/ },
  { name: 'tcmalloc', file: /\/libtcmalloc(_minimal)?\.so[.\d]*$/, env: /^TCMALLOC_/ },
] as const;
const GLIBC_ENV = /^(MALLOC_ARENA_MAX|MALLOC_\w+_|GLIBC_TUNABLES)$/;

/** `maps` is /proc/self/maps (read when not given or undefined); null where there is none. */
export function memoryAllocator(env: NodeJS.ProcessEnv = process.env, maps: string | null = readMaps()): AllocatorInfo {
  const mapped = new Set(
    (maps ?? '')
      .split('\n')
      .map((line) => line.slice(line.indexOf('/')))
      .filter((file) => file.startsWith('/')),
  );
  const preloaded = PRELOADABLE.find((lib) => [...mapped].some((file) => lib.file.test(file)));
  const name = preloaded?.name ?? (maps === null ? 'system' : 'glibc');
  const settingName = preloaded?.env ?? (name === 'glibc' ? GLIBC_ENV : undefined);
  const settings = Object.fromEntries(
    Object.entries(env)
      .filter((kv): kv is [string, string] => kv[1] !== undefined && settingName?.test(kv[0]) === true)
      .sort(([a], [b]) => (a < b ? -1 : 1)),
  );
  const mappedNames = new Set([...mapped].map((file) => path.basename(file)));
  // ld.so splits LD_PRELOAD on spaces and colons; a bare name is looked up like a DT_NEEDED library, a
  // path may be a symlink to the file that /proc/self/maps shows.
  const loaded = (entry: string) => (entry.includes('/') ? mapped.has(entry) || mapped.has(realpathOrSelf(entry)) : mappedNames.has(entry));
  const notLoaded = maps === null ? [] : (env.LD_PRELOAD ?? '').split(/[\s:]+/).filter((entry) => entry && !loaded(entry));
  return { name, settings, notLoaded };
}

/** What is wrong when an LD_PRELOAD entry did not load (undefined when all did), for the log and doctor. */
export function preloadFailure(info: AllocatorInfo): string | undefined {
  if (!info.notLoaded.length) return undefined;
  return `LD_PRELOAD names ${info.notLoaded.join(', ')}, which is not installed (apt-get install libjemalloc2, or unset LD_PRELOAD): running on ${describeAllocator(info)}`;
}

/** One line for a log or a doctor check: `jemalloc (MALLOC_CONF=…)`, `glibc (MALLOC_ARENA_MAX=1, …)`. */
export function describeAllocator(info: AllocatorInfo): string {
  const settings = Object.entries(info.settings).map(([k, v]) => `${k}=${v}`);
  return settings.length ? `${info.name} (${settings.join(', ')})` : info.name;
}

function realpathOrSelf(file: string): string {
  try {
    return realpathSync(file);
  } catch {
    return file;
  }
}

function readMaps(): string | null {
  if (process.platform !== 'linux') return null;
  try {
    return readFileSync('/proc/self/maps', 'utf8');
  } catch {
    return null;
  }
}
