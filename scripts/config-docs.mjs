#!/usr/bin/env node
// Rewrites the configuration table in README.md from the schema (run `npm run docs` after changing a key).
import { readFileSync, writeFileSync } from 'node:fs';
import { withConfigKeys } from '../dist/config/docs.js';

const file = new URL('../README.md', import.meta.url);
const before = readFileSync(file, 'utf8');
const after = withConfigKeys(before);
if (after !== before) writeFileSync(file, after);
console.log(after === before ? 'README.md configuration table is up to date' : 'README.md configuration table rewritten');
