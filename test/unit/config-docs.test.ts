import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { buildSchema, schemaKeys } from '../../src/config/index.js';
import { configKeysMarkdown, withConfigKeys } from '../../src/config/docs.js';

describe('README configuration table', () => {
  it('lists every schema key with its environment variable', () => {
    const table = configKeysMarkdown();
    for (const { key, env } of schemaKeys(buildSchema({}))) {
      expect(table).toContain(`| \`${key}\` |`);
      expect(table).toContain(`\`${env}\``);
    }
    // Machine-specific defaults are described, not copied from the machine that generated the docs.
    expect(table).toMatch(/\| `deviceId` \| the hostname \|/);
  });

  it('is current in README.md (run `npm run docs` after changing the schema)', async () => {
    const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
    expect(withConfigKeys(readme)).toBe(readme);
  });
});
