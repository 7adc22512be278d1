// The README's table of configuration keys, generated from the schema so the two cannot drift apart
// (`npm run docs` rewrites it; a test fails when it is stale).
import { buildSchema, isLeaf, legacyEnvName, type SchemaNode } from './schema.js';

/** Defaults that depend on the machine the docs are generated on are shown by what they mean instead. */
export const HOST_DEPENDENT: Readonly<Record<string, string>> = {
  deviceId: 'the hostname',
  stateDir: '$STATE_DIRECTORY, else /var/lib/inceptiond',
  runtimeDir: '$RUNTIME_DIRECTORY, else the OS temp dir',
};

function rows(node: SchemaNode, prefix: string[]): string[] {
  const out: string[] = [];
  for (const [key, child] of Object.entries(node)) {
    const path = [...prefix, key];
    const dotted = path.join('.');
    if (!isLeaf(child)) {
      out.push(...rows(child, path));
      continue;
    }
    const shown = HOST_DEPENDENT[dotted] ?? JSON.stringify(child.default);
    const doc = String(child.doc ?? '').replaceAll('|', '\\|');
    const legacy = legacyEnvName(path);
    const env = legacy === child.env ? `\`${child.env}\`` : `\`${child.env}\`<br>deprecated: \`${legacy}\``;
    out.push(`| \`${dotted}\` | ${HOST_DEPENDENT[dotted] ? shown : `\`${shown}\``} | ${env} | ${doc} |`);
  }
  return out;
}

export function configKeysMarkdown(): string {
  return ['| key | default | environment | meaning |', '|---|---|---|---|', ...rows(buildSchema({}), [])].join('\n');
}

export const CONFIG_KEYS_START = '<!-- config-keys:start -->';
export const CONFIG_KEYS_END = '<!-- config-keys:end -->';

/** The README text with the table between the markers replaced by the current one. */
export function withConfigKeys(readme: string): string {
  const start = readme.indexOf(CONFIG_KEYS_START);
  const end = readme.indexOf(CONFIG_KEYS_END);
  if (start < 0 || end < start) throw new Error(`README has no ${CONFIG_KEYS_START} … ${CONFIG_KEYS_END} block`);
  return `${readme.slice(0, start + CONFIG_KEYS_START.length)}\n${configKeysMarkdown()}\n${readme.slice(end)}`;
}
