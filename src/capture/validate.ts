/** The source id check every backend's constructor makes (their other options: fields.ts). */

/**
 * The configuration's rule for source ids (config/formats.ts, SOURCE_ID): an id is one MQTT topic level
 * and goes into metric labels and temp file names. A test keeps the two equal.
 */
const SOURCE_ID = /^[A-Za-z0-9_-]{1,64}$/;

export function requireSourceId(id: unknown): string {
  if (typeof id !== 'string' || !SOURCE_ID.test(id)) {
    throw new TypeError(`source id must be 1-64 characters from A-Z, a-z, 0-9, "_" and "-", got ${JSON.stringify(id)}`);
  }
  return id;
}
