/** Checks shared by the backends' constructors: bad configuration fails at construction, clearly. */

const SOURCE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** Source ids end up in MQTT topics, metric labels and temp file names, so they are kept plain. */
export function requireSourceId(id: unknown): string {
  if (typeof id !== 'string' || !SOURCE_ID.test(id)) {
    throw new TypeError(
      `source id must be 1–64 characters of letters, digits, "_", "." or "-" (starting with a letter or digit), got ${JSON.stringify(id)}`,
    );
  }
  return id;
}

export function requireInteger(sourceId: string, name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new TypeError(`source "${sourceId}": ${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

export function requireNumber(sourceId: string, name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw new TypeError(`source "${sourceId}": ${name} must be a number from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}
