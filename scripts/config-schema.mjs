#!/usr/bin/env node
// Writes config/inceptiond.schema.json, the JSON Schema of the configuration file, from the convict schema
// (run `npm run schema` after changing a key; a test fails when the committed file is stale).
import { readFileSync, writeFileSync } from 'node:fs';
import { CONFIG_SCHEMA_PATH, configJsonSchemaText } from '../dist/config/json-schema.js';

const file = new URL(`../${CONFIG_SCHEMA_PATH}`, import.meta.url);
let before = '';
try {
  before = readFileSync(file, 'utf8');
} catch {
  // first run
}
const after = configJsonSchemaText();
if (after !== before) writeFileSync(file, after);
console.log(after === before ? `${CONFIG_SCHEMA_PATH} is up to date` : `${CONFIG_SCHEMA_PATH} written`);
