import { fileURLToPath } from 'node:url';

/**
 * The package root (where package.json, config/ and models/ live). This file is src/config/paths.ts in
 * development and dist/config/paths.js when built; both are two levels below the root.
 */
export const projectRoot: string = fileURLToPath(new URL('../../', import.meta.url)).replace(/\/$/, '');
