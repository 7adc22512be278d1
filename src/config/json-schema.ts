// The configuration as a JSON Schema (draft 2020-12), generated from the convict schema: every key with
// its description, type, enumeration or range and default, so an editor (VS Code, or any YAML language
// server) completes keys and flags mistakes while the file is written. `npm run schema` writes it to
// config/inceptiond.schema.json; a test fails when the committed file is stale. The loader stays the
// judge: a few checks (URLs, values that depend on other keys) are looser here than there.
import { HOST_DEPENDENT } from './docs.js';
import { formatJsonSchema, type JsonSchema } from './formats.js';
import { buildSchema, isLeaf, legacyEnvName, sourceEntrySchema, type SchemaNode } from './schema.js';
import type { CaptureConfig, SourceStages } from './types.js';

/** Where the schema is committed, relative to the package root. */
export const CONFIG_SCHEMA_PATH = 'config/inceptiond.schema.json';

/** What the groups are for (the leaves have their own docs in the schema). */
const GROUP_DOCS: Readonly<Record<string, string>> = {
  capture: 'How frames are captured: the backend and its settings; also the defaults of each sources entry',
  'capture.files': 'Backend files: images from a folder or glob',
  'capture.webcam': 'Backend webcam: fswebcam, one process per frame',
  'capture.ffmpeg': 'Backend ffmpeg: one long-running ffmpeg stream (V4L2, RTSP, HTTP or a file)',
  model: 'Which model runs, and how the daemon builds and quantizes its own',
  'model.calibration': 'Images and method used when the daemon quantizes a model itself',
  inference: 'ONNX Runtime: execution providers, threads and how many labels a Result has',
  mqtt: 'The broker: URL, credentials, TLS, topics and reconnection',
  'mqtt.embeddedBroker': 'An in-process MQTT broker (development, single-box setups)',
  outbox: 'Results kept on disk while the broker is unreachable',
  http: 'The HTTP server: /healthz, /metrics and /status',
  publish: 'Which Results are published (defaults of each source)',
  motion: 'Motion gating: skip inference while the picture does not change (defaults of each source)',
  snapshot: 'JPEG snapshots on a change of top label (defaults of each source)',
  control: 'Requests on <base>/request/<op>',
  homeassistant: 'Home Assistant MQTT discovery',
  metrics: 'The <base>/metrics topic',
  health: 'When /healthz and the systemd watchdog consider the daemon stuck',
  log: 'Logging',
};

function leafSchema(
  leaf: { doc?: string; format?: unknown; default?: unknown; env?: string },
  path: string[],
  defaults: boolean,
): JsonSchema {
  const dotted = path.join('.');
  const parts = [String(leaf.doc ?? '')];
  if (leaf.env !== undefined) {
    const legacy = legacyEnvName(path);
    parts.push(`Environment: ${leaf.env}${legacy === leaf.env ? '' : ` (deprecated: ${legacy})`}.`);
  }
  const hostDependent = HOST_DEPENDENT[dotted];
  if (defaults && hostDependent !== undefined) parts.push(`Default: ${hostDependent}.`);
  const out: JsonSchema = { description: parts.filter((p) => p !== '').join('\n\n'), ...(formatJsonSchema(leaf.format) ?? {}) };
  if (defaults && hostDependent === undefined && leaf.default !== null && leaf.default !== undefined) {
    out.default = structuredClone(leaf.default);
  }
  return out;
}

function groupSchema(node: SchemaNode, path: string[], defaults: boolean): JsonSchema {
  const properties: Record<string, JsonSchema> = {};
  for (const [key, child] of Object.entries(node)) {
    const childPath = [...path, key];
    properties[key] = isLeaf(child) ? leafSchema(child, childPath, defaults) : groupSchema(child, childPath, defaults);
  }
  const doc = GROUP_DOCS[path.join('.')];
  return { ...(doc ? { description: doc } : {}), type: 'object', properties, additionalProperties: false };
}

/** One `sources` entry: `id` required; every other key defaults to the top-level one of the same name. */
function sourceEntryJsonSchema(defaults: { capture: CaptureConfig } & SourceStages): JsonSchema {
  const entry = groupSchema(sourceEntrySchema(defaults), [], false);
  return {
    description:
      'One camera: an id, and the keys of capture, publish, motion and snapshot that differ for it (the others come from those groups)',
    ...entry,
    required: ['id'],
  };
}

/** The JSON Schema of a configuration file. Machine-independent: the same on every machine that generates it. */
export function configJsonSchema(): JsonSchema {
  const schema = buildSchema({});
  const root = groupSchema(schema, [], true);
  const properties = root.properties as Record<string, JsonSchema>;
  const group = (key: string) => defaultsOf(schema[key] as SchemaNode);
  const entryDefaults = { capture: group('capture'), publish: group('publish'), motion: group('motion'), snapshot: group('snapshot') };
  properties.sources = {
    ...properties.sources,
    items: sourceEntryJsonSchema(entryDefaults as unknown as { capture: CaptureConfig } & SourceStages),
  };
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    title: 'inceptiond configuration',
    description:
      'Configuration file of inceptiond (JSON, or YAML for .yaml/.yml), laid over the built-in defaults; every key also has an environment variable, which wins. Generated from src/config/schema.ts by `npm run schema`.',
    type: 'object',
    properties: {
      $schema: { description: 'The JSON Schema of this file (this one), for editors; ignored by inceptiond.', type: 'string' },
      ...properties,
    },
    additionalProperties: false,
  };
}

function defaultsOf(node: SchemaNode): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, child] of Object.entries(node)) out[key] = isLeaf(child) ? structuredClone(child.default) : defaultsOf(child);
  return out;
}

/** The committed file's text: two-space JSON and a final newline. */
export function configJsonSchemaText(): string {
  return `${JSON.stringify(configJsonSchema(), null, 2)}\n`;
}
