/** The source id check every backend's constructor makes (their other options: fields.ts). */

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
