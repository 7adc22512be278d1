// Convict leaves from capture's plain field descriptions: the check and its message are capture's own
// (fieldProblem), so a value `config check` accepts is one the backend accepts.
import type convict from 'convict';
import { fieldProblem, type Field, type Fields } from '../capture/index.js';
import { BOOLEAN, STRING_LIST, coerceInteger, coerceNumber, register, type JsonSchema } from './formats.js';

/** The field's rule as JSON Schema (config/inceptiond.schema.json): range, "unset" value, pattern. */
function fieldJsonSchema(field: Field): JsonSchema {
  switch (field.kind) {
    case 'integer':
    case 'number': {
      const range = { type: field.kind, minimum: field.min, maximum: field.max };
      return field.unset === undefined ? range : { anyOf: [{ const: field.unset }, range] };
    }
    case 'string': {
      const { pattern } = field;
      if (pattern?.flags) throw new Error(`capture field pattern /${pattern.source}/${pattern.flags}: flags do not fit in a JSON Schema`);
      // "" is refused unless the field says what it means; any other value must match the pattern.
      if (field.empty === undefined) return { type: 'string', minLength: 1, ...(pattern ? { pattern: pattern.source } : {}) };
      return pattern ? { type: 'string', anyOf: [{ const: '' }, { pattern: pattern.source }] } : { type: 'string' };
    }
    case 'boolean':
      return { type: 'boolean' };
    case 'string-list':
      return { type: 'array', items: { type: 'string' } };
  }
}

function format(name: string, field: Field): string {
  // Booleans and lists keep config's formats: their env spellings (yes/no, JSON arrays) are config's.
  if (field.kind === 'boolean') return BOOLEAN;
  if (field.kind === 'string-list') return STRING_LIST;
  const coerce = field.kind === 'integer' ? coerceInteger : field.kind === 'number' ? coerceNumber : undefined;
  return register(
    `field-${name}`,
    (value) => {
      const problem = fieldProblem(field, value);
      if (problem !== undefined) throw new Error(problem);
    },
    coerce,
    fieldJsonSchema(field),
  );
}

/** `fields` as schema leaves; `group` names the formats (`capture.ffmpeg`), whose checks differ by key. */
export function fieldLeaves(group: string, fields: Fields): Record<string, convict.SchemaObj> {
  return Object.fromEntries(
    Object.entries(fields).map(([key, field]) => [
      key,
      { doc: field.doc, format: format(`${group}.${key}`, field), default: structuredClone(field.default) },
    ]),
  );
}
