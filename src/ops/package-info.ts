import { readFileSync } from 'node:fs';
import path from 'node:path';
import { projectRoot } from '../config/index.js';

/** The version in package.json, read once; "unknown" rather than a crash if the file is missing. */
export const packageVersion: string = (() => {
  try {
    const pkg = JSON.parse(readFileSync(path.join(projectRoot, 'package.json'), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
})();
