// Convict leaves from capture's plain field descriptions: the check and its message are capture's own
// (fieldProblem), so a value `config check` accepts is one the backend accepts.
import type convict from 'convict';
import { fieldProblem, type Field, type Fields } from '../capture/index.js';
import { BOOLEAN, STRING_LIST, coerceInteger, coerceNumber, register } from './formats.js';

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
