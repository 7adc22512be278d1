// Reading a configuration file: JSON, or YAML for a name ending in .yaml or .yml. Both give the same
// plain object (one schema judges both) and, for each key, the line and column where it is written, so
// a problem found later names the place to fix. A file that does not parse is a ConfigError naming the
// file and the line.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type * as YamlLibrary from 'yaml';
import { ConfigError, fileProblem, type ConfigProblem } from './errors.js';

export interface Position {
  /** 1-based. */
  line: number;
  /** 1-based, in characters. */
  column: number;
}

export type ConfigFileFormat = 'json' | 'yaml';

export interface ConfigFileData {
  file: string;
  format: ConfigFileFormat;
  values: Record<string, unknown>;
  /**
   * Where each key is written, by the dotted key the messages use: `mqtt.qos`, `sources[1]` (the entry),
   * `sources[1].ffmpeg.input`. Keys a YAML merge (`<<: *base`) brings in have none.
   */
  positions: Map<string, Position>;
}

/** YAML for .yaml and .yml; everything else is read as JSON (the format of the files before YAML). */
export function configFileFormat(file: string): ConfigFileFormat {
  return /\.ya?ml$/i.test(file) ? 'yaml' : 'json';
}

/** Reads and parses a config file; throws ConfigError for a file that cannot be read or parsed. */
export function parseConfigFile(file: string): ConfigFileData {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new ConfigError(fileProblem(`cannot read config file ${file}: ${code}`, String(code)), { cause: err });
  }
  return parseConfigText(file, text);
}

/** Parses `text` as the file `file` (whose name picks the format). An empty file means `{}`. */
export function parseConfigText(file: string, text: string, format = configFileFormat(file)): ConfigFileData {
  // A byte-order mark (Windows editors) is not part of the text.
  const source = text.startsWith('\uFEFF') ? text.slice(1) : text;
  return format === 'yaml' ? parseYaml(file, source) : parseJson(file, source);
}

/** Reads and parses a config file; must hold an object (an empty file means `{}`). */
export function readConfigFile(file: string): Record<string, unknown> {
  return parseConfigFile(file).values;
}

function notAnObject(file: string, format: ConfigFileFormat): ConfigError {
  const what = format === 'yaml' ? 'a YAML mapping (key: value lines)' : 'a JSON object ({ … })';
  return new ConfigError(fileProblem(`config file ${file} must hold ${what}`, 'not an object'));
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

// ---------------------------------------------------------------------------------------------- JSON

function parseJson(file: string, text: string): ConfigFileData {
  if (text.trim() === '') return { file, format: 'json', values: {}, positions: new Map() };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    // V8 quotes the offending text, newlines included; keep the error on one line.
    const message = (err as Error).message.replace(/\s*\n\s*/g, ' ');
    const match = /position (\d+)/.exec((err as Error).message);
    const where = match ? positionAt(lineStarts(text), Number(match[1])) : undefined;
    const reason = `${message}${where ? ` (line ${where.line}, column ${where.column})` : ''}`;
    throw new ConfigError(fileProblem(`config file ${file} is not valid JSON: ${reason}`, reason), { cause: err });
  }
  if (!isPlainObject(parsed)) throw notAnObject(file, 'json');
  return { file, format: 'json', values: parsed, positions: jsonPositions(text) };
}

/** Offsets where each line starts. */
function lineStarts(text: string): number[] {
  const starts = [0];
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) starts.push(i + 1);
  return starts;
}

function positionAt(starts: readonly number[], offset: number): Position {
  let lo = 0;
  let hi = starts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (starts[mid]! <= offset) lo = mid;
    else hi = mid - 1;
  }
  return { line: lo + 1, column: offset - starts[lo]! + 1 };
}

/** Deeper than this, keys are not recorded (a configuration is a few levels deep; a hostile file may be thousands). */
const MAX_RECORDED_DEPTH = 16;

/**
 * The position of every key of a text JSON.parse accepted. A small scanner, not a parser: it relies on
 * the text being valid JSON. A key written twice gets the position of the last one, whose value
 * JSON.parse keeps.
 */
function jsonPositions(text: string): Map<string, Position> {
  const starts = lineStarts(text);
  const positions = new Map<string, Position>();
  let i = 0;
  const skipSpace = () => {
    while (i < text.length && (text[i] === ' ' || text[i] === '\t' || text[i] === '\n' || text[i] === '\r')) i++;
  };
  const readString = (): string => {
    const start = i;
    i++; // opening quote
    while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i++;
    return JSON.parse(text.slice(start, i)) as string;
  };
  // Skips a value without recording anything, iteratively (a hostile file may nest arrays thousands deep).
  const skipValue = () => {
    let depth = 0;
    do {
      skipSpace();
      const c = text[i];
      if (c === '"') readString();
      else if (c === '{' || c === '[') {
        depth++;
        i++;
      } else if (c === '}' || c === ']') {
        depth--;
        i++;
      } else if (c === ',' || c === ':') i++;
      else while (i < text.length && !/[\s,\]}]/.test(text[i]!)) i++;
    } while (depth > 0 && i < text.length);
  };
  const value = (path: string, depth: number): void => {
    skipSpace();
    const c = text[i];
    if (depth > MAX_RECORDED_DEPTH && (c === '{' || c === '[')) {
      skipValue();
      return;
    }
    if (c === '{') {
      i++;
      skipSpace();
      if (text[i] === '}') {
        i++;
        return;
      }
      for (;;) {
        skipSpace();
        const at = i;
        const key = readString();
        const child = path === '' ? key : `${path}.${key}`;
        positions.set(child, positionAt(starts, at));
        skipSpace();
        i++; // ':'
        value(child, depth + 1);
        skipSpace();
        if (text[i++] === '}') return;
      }
    }
    if (c === '[') {
      i++;
      skipSpace();
      if (text[i] === ']') {
        i++;
        return;
      }
      for (let index = 0; ; index++) {
        skipSpace();
        const child = `${path}[${index}]`;
        positions.set(child, positionAt(starts, i));
        value(child, depth + 1);
        skipSpace();
        if (text[i++] === ']') return;
      }
    }
    if (c === '"') readString();
    else while (i < text.length && !/[\s,\]}]/.test(text[i]!)) i++;
  };
  value('', 0);
  return positions;
}

// ---------------------------------------------------------------------------------------------- YAML

/** At most this many YAML syntax errors are listed: after the first few, they are mostly echoes. */
const MAX_YAML_ERRORS = 5;

let yamlLibrary: typeof YamlLibrary | undefined;
/** Loaded on first use: a daemon on a JSON config does not carry the YAML parser (~1 MB of its heap). */
function yaml(): typeof YamlLibrary {
  yamlLibrary ??= createRequire(import.meta.url)('yaml') as typeof YamlLibrary;
  return yamlLibrary;
}

function parseYaml(file: string, text: string): ConfigFileData {
  const { LineCounter, isAlias, isMap, isPair, isScalar, isSeq, parseDocument } = yaml();
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, {
    lineCounter,
    prettyErrors: false,
    // YAML 1.2's core schema: yes/no/on/off stay strings (no "Norway problem"), and the YAML 1.1 tags
    // (!!binary, !!timestamp, !!set …) are not turned into Buffers, Dates or Sets: they are reported.
    version: '1.2',
    schema: 'core',
    resolveKnownTags: false,
    uniqueKeys: true,
    // `<<: *defaults` between sources entries.
    merge: true,
  });
  const problems: ConfigProblem[] = [...doc.errors, ...doc.warnings].slice(0, MAX_YAML_ERRORS).map((e) => {
    const { line, col } = lineCounter.linePos(e.pos[0]);
    const message = e.code === 'MULTIPLE_DOCS' ? 'holds more than one document (---): a config file holds one' : e.message.split('\n')[0];
    const reason = `${message} (line ${line}, column ${col})`;
    return fileProblem(`config file ${file} is not valid YAML: ${reason}`, reason);
  });
  if (problems.length > 0) throw new ConfigError(problems);
  let parsed: unknown;
  try {
    // Aliases may point at aliases: bounded, so a "billion laughs" file is refused instead of filling memory.
    parsed = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    const reason = (err as Error).message;
    throw new ConfigError(fileProblem(`config file ${file} is not valid YAML: ${reason}`, reason), { cause: err });
  }
  if (parsed === null || parsed === undefined) return { file, format: 'yaml', values: {}, positions: new Map() };
  if (!isPlainObject(parsed)) throw notAnObject(file, 'yaml');
  const positions = new Map<string, Position>();
  const at = (offset: number): Position => {
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };
  const walk = (node: unknown, path: string, depth: number): void => {
    if (depth > MAX_RECORDED_DEPTH || isAlias(node)) return;
    if (isMap(node)) {
      for (const pair of node.items) {
        if (!isPair(pair) || !isScalar(pair.key) || pair.key.range === undefined || pair.key.range === null) continue;
        const key = String(pair.key.value);
        if (key === '<<') continue;
        const child = path === '' ? key : `${path}.${key}`;
        positions.set(child, at(pair.key.range[0]));
        walk(pair.value, child, depth + 1);
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, index) => {
        const child = `${path}[${index}]`;
        const range = (item as YamlLibrary.Node | null)?.range;
        if (range) positions.set(child, at(range[0]));
        walk(item, child, depth + 1);
      });
    }
  };
  walk(doc.contents, '', 0);
  return { file, format: 'yaml', values: parsed, positions };
}
