// Runs convict over one object and turns everything it (and our structural pre-check) finds into
// ConfigProblems. convict reports all type errors of a validate() in one Error, one line each; we split
// them back into keys so `config check` can list every problem with its key and value.
import convict from 'convict';
import { invalidValue, unknownKey, type ConfigProblem } from './errors.js';
import { isLeaf, type SchemaNode } from './schema.js';

export interface SchemaCheck {
  values: Record<string, unknown>;
  problems: ConfigProblem[];
}

const NUMERIC_TEXT = /^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Validates `input` (a parsed config file or one `sources` entry) merged over the schema defaults, with
 * the schema's env vars from `env` winning. `keyPrefix` is put before keys in messages (`sources[1].`).
 * `envOrigin` names the variable a key's value came from (a deprecated alias may stand for the name in
 * `env`); by default, the schema's variable when `env` sets it.
 */
export function checkAgainstSchema(
  schema: SchemaNode,
  input: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
  keyPrefix = '',
  envOrigin?: (key: string) => string | undefined,
): SchemaCheck {
  const problems: ConfigProblem[] = [];
  const objectLeaves: ObjectLeaf[] = [];
  const cleaned = checkStructure(schema, input, keyPrefix, problems, objectLeaves);

  // args: [] keeps convict from reading process.argv (the CLI's own flags).
  const cfg = convict(schema as convict.Schema<Record<string, unknown>>, { env, args: [] });
  try {
    cfg.load(cleaned);
  } catch (err) {
    problems.push({ reason: (err as Error).message, message: `invalid configuration: ${(err as Error).message}` });
    return { values: cfg.getProperties(), problems };
  }
  // convict's load() walks into objects as if they were groups and fails on a leaf that holds one; set()
  // stores it whole. The environment still wins, as for every other key.
  for (const leaf of objectLeaves) {
    if (leaf.env === undefined || env[leaf.env] === undefined) cfg.set(leaf.path, leaf.value);
  }
  try {
    cfg.validate({ allowed: 'strict' });
  } catch (err) {
    const origin =
      envOrigin ??
      ((key: string) => {
        const envVar = envVarOf(schema, key);
        return envVar !== undefined && env[envVar] !== undefined ? envVar : undefined;
      });
    problems.push(...parseConvictErrors((err as Error).message, cfg, origin, keyPrefix));
  }
  return { values: cfg.getProperties(), problems };
}

/**
 * Unknown keys and objects where values belong (or the reverse) are found here, before convict: convict
 * would replace a whole group given a string, or crash on an object given for a value. Bad parts are
 * left out of the returned copy so convict still checks everything else.
 */
interface ObjectLeaf {
  /** Path inside this schema (without the message prefix). */
  path: string;
  env?: string;
  value: Record<string, unknown>;
}

function checkStructure(
  schema: SchemaNode,
  input: Record<string, unknown>,
  prefix: string,
  problems: ConfigProblem[],
  objectLeaves: ObjectLeaf[],
  path = '',
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(input)) {
    const dotted = prefix + key;
    const own = path + key;
    const node = Object.hasOwn(schema, key) ? schema[key] : undefined;
    if (node === undefined) {
      const near = closest(key, Object.keys(schema));
      problems.push(unknownKey(dotted, near === undefined ? undefined : prefix + near));
      continue;
    }
    if (isLeaf(node)) {
      // A leaf whose default is an object (inference.providerOptions) takes an object: its format checks it.
      if (isPlainObject(value) && isPlainObject(node.default)) {
        objectLeaves.push({ path: own, env: node.env, value });
        continue;
      }
      if (isPlainObject(value)) {
        problems.push(invalidValue(dotted, value, 'must be a single value, not an object'));
        continue;
      }
      // convict would coerce "3" to 3 with the format meant for environment text: in a file it is a
      // mistake. (Other strings reach the format, whose message says what it takes.)
      if (typeof value === 'string' && typeof node.default === 'number' && NUMERIC_TEXT.test(value)) {
        problems.push(invalidValue(dotted, value, 'must be a number, not a string (quotes are for environment variables only)'));
        continue;
      }
      out[key] = value;
    } else if (!isPlainObject(value)) {
      problems.push(invalidValue(dotted, value, 'must be an object'));
    } else {
      out[key] = checkStructure(node, value, `${dotted}.`, problems, objectLeaves, `${own}.`);
    }
  }
  return out;
}

function parseConvictErrors(
  text: string,
  cfg: convict.Config<Record<string, unknown>>,
  envOrigin: (key: string) => string | undefined,
  prefix: string,
): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  for (const line of text.split('\n')) {
    const undeclared = /^configuration param '(.+)' not declared in the schema$/.exec(line);
    if (undeclared) {
      problems.push(unknownKey(prefix + undeclared[1]!));
      continue;
    }
    const missing = /^configuration param '(.+)' missing from config/.exec(line);
    if (missing) {
      // Only reachable when a group was replaced by a value, which checkStructure already reports.
      continue;
    }
    const typed = /^([^\s:]+): (.*)$/.exec(line);
    if (!typed) {
      problems.push({ reason: line, message: `invalid configuration: ${line}` });
      continue;
    }
    const key = typed[1]!;
    let reason = typed[2]!;
    const valueAt = reason.lastIndexOf(': value was ');
    if (valueAt >= 0) reason = reason.slice(0, valueAt);
    reason = reason.replace(/^must be one of the possible values: /, 'must be one of ');
    let value: unknown;
    try {
      value = cfg.get(key as never);
    } catch {
      value = undefined;
    }
    problems.push(invalidValue(prefix + key, value, reason, envOrigin(key)));
  }
  return problems;
}

function envVarOf(schema: SchemaNode, dotted: string): string | undefined {
  let node: SchemaNode | convict.SchemaObj | undefined = schema;
  for (const part of dotted.split('.')) {
    if (node === undefined || isLeaf(node)) return undefined;
    node = (node as SchemaNode)[part];
  }
  return node !== undefined && isLeaf(node) ? node.env : undefined;
}

/** The sibling key a typo probably meant (edit distance ≤ 2, or ≤ a third of its length). */
function closest(key: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const d = editDistance(key.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(key.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution);
    }
    previous = current;
  }
  return previous[b.length]!;
}
