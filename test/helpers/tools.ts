/**
 * The optional tools some tests need, and the note a test gives when it skips for lack of one. The
 * suite passes on a machine with nothing but `npm ci`; what it could not test there is listed at the
 * end of the run (test/helpers/skip-reporter.ts), never hidden.
 */
import { createRequire } from 'node:module';
import { findMosquitto } from './broker.js';
import { which } from './which.js';

export const SKIP = {
  mqtt5: 'needs mosquitto: MQTT 5 (the fallback broker, Aedes, speaks MQTT 3.1.1 only)',
  fswebcam: "needs Debian's fswebcam (apt install fswebcam)",
  unixDgram: 'needs the optional native module unix-dgram (not built: no compiler?)',
} as const;

/** The broker startBroker() will give: Mosquitto when installed, unless INCEPTIOND_TEST_BROKER=aedes. */
export function testBrokerKind(): 'mosquitto' | 'aedes' {
  return process.env.INCEPTIOND_TEST_BROKER !== 'aedes' && findMosquitto() ? 'mosquitto' : 'aedes';
}

export function hasFswebcam(): boolean {
  return which('fswebcam') !== null;
}

/** unix-dgram is an optionalDependency built by node-gyp: absent when the build was skipped or failed. */
export function loadUnixDgram<T>(): T | null {
  try {
    return createRequire(import.meta.url)('unix-dgram') as T;
  } catch {
    return null;
  }
}
