/**
 * Integration tests run the compiled `dist/`: compile it when any source is newer (the test suites'
 * global setups call this, so a run never tests a stale build).
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

function distIsStale(): boolean {
  try {
    return statSync(path.join(root, 'dist', 'cli.js')).mtimeMs < newestMtime(path.join(root, 'src'));
  } catch {
    return true;
  }
}

/** Compiles src → dist when stale; returns whether it did. Throws when tsc fails (its output is shown). */
export function buildDistIfStale(): boolean {
  if (!distIsStale()) return false;
  execFileSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], {
    cwd: root,
    stdio: 'inherit',
  });
  return true;
}
