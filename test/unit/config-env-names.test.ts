/**
 * Environment variable names separate the words of each key (INCEPTIOND_CAPTURE_WEBCAM_TIMEOUT_MS); the
 * names with the words run together (INCEPTIOND_CAPTURE_WEBCAM_TIMEOUTMS) keep working as deprecated
 * aliases, with a warning naming the new name, and the new name wins when both are set.
 */
import { describe, expect, it, vi } from 'vitest';
import { configKeysMarkdown } from '../../src/config/docs.js';
import { buildSchema, type ConfigError, envName, keysSetByEnv, legacyEnvName, loadConfig, schemaKeys } from '../../src/config/index.js';

const KEYS = schemaKeys(buildSchema({}));

describe('environment variable names', () => {
  it('split the words of each camelCase segment with _', () => {
    expect(envName(['capture', 'webcam', 'timeoutMs'])).toBe('INCEPTIOND_CAPTURE_WEBCAM_TIMEOUT_MS');
    expect(envName(['mqtt', 'embeddedBroker', 'enabled'])).toBe('INCEPTIOND_MQTT_EMBEDDED_BROKER_ENABLED');
    expect(envName(['health', 'maxAckWaitSec'])).toBe('INCEPTIOND_HEALTH_MAX_ACK_WAIT_SEC');
    expect(envName(['inference', 'topK'])).toBe('INCEPTIOND_INFERENCE_TOP_K');
    expect(envName(['inference', 'epContextCache'])).toBe('INCEPTIOND_INFERENCE_EP_CONTEXT_CACHE');
    expect(envName(['homeassistant', 'enabled'])).toBe('INCEPTIOND_HOMEASSISTANT_ENABLED');
    expect(envName(['a', 'HTTPServer2Port'])).toBe('INCEPTIOND_A_HTTP_SERVER2_PORT');
    expect(legacyEnvName(['capture', 'webcam', 'timeoutMs'])).toBe('INCEPTIOND_CAPTURE_WEBCAM_TIMEOUTMS');
  });

  it('every key has its name in the schema, an alias only when the old name differs, and no name is shared', () => {
    const seen = new Map<string, string>();
    for (const { key, env, legacyEnv } of KEYS) {
      const path = key.split('.');
      expect(env, key).toBe(envName(path));
      expect(env, key).toMatch(/^INCEPTIOND(_[A-Z0-9]+)+$/);
      if (path.every((p) => p === p.toLowerCase())) expect(legacyEnv, key).toBeUndefined();
      else expect(legacyEnv, key).toBe(legacyEnvName(path));
      for (const name of [env!, ...(legacyEnv ? [legacyEnv] : [])]) {
        expect(seen.get(name), `${name} is used by ${seen.get(name)} and ${key}`).toBeUndefined();
        seen.set(name, key);
      }
    }
    expect(KEYS.find((k) => k.key === 'mqtt.url')).toMatchObject({ env: 'INCEPTIOND_MQTT_URL' });
    expect(KEYS.find((k) => k.key === 'mqtt.url')!.legacyEnv).toBeUndefined();
  });

  it('the new names are read', () => {
    const { config, warnings } = loadConfig({
      env: {
        INCEPTIOND_CAPTURE_WEBCAM_TIMEOUT_MS: '2500',
        INCEPTIOND_MQTT_EMBEDDED_BROKER_ENABLED: 'true',
        INCEPTIOND_INFERENCE_TOP_K: '2',
        INCEPTIOND_MQTT_URL: 'mqtt://127.0.0.1:1884',
      },
    });
    expect(config.capture.webcam.timeoutMs).toBe(2500);
    expect(config.mqtt.embeddedBroker.enabled).toBe(true);
    expect(config.inference.topK).toBe(2);
    expect(config.mqtt.url).toBe('mqtt://127.0.0.1:1884');
    expect(warnings).toEqual([]);
  });

  it('a deprecated name still works, with one warning naming the new name, reported once per reporter', () => {
    const env = { INCEPTIOND_CAPTURE_WEBCAM_TIMEOUTMS: '2500', INCEPTIOND_MQTT_EMBEDDEDBROKER_PORT: '1999' };
    const onWarning = vi.fn();
    const first = loadConfig({ env, onWarning });
    expect(first.config.capture.webcam.timeoutMs).toBe(2500);
    expect(first.config.mqtt.embeddedBroker.port).toBe(1999);
    expect(first.warnings).toEqual([
      expect.stringMatching(
        /^INCEPTIOND_CAPTURE_WEBCAM_TIMEOUTMS is deprecated: rename it to INCEPTIOND_CAPTURE_WEBCAM_TIMEOUT_MS \(capture\.webcam\.timeoutMs\)/,
      ),
      expect.stringMatching(/^INCEPTIOND_MQTT_EMBEDDEDBROKER_PORT is deprecated: rename it to INCEPTIOND_MQTT_EMBEDDED_BROKER_PORT/),
    ]);
    expect(first.origins['capture.webcam.timeoutMs']).toEqual({
      kind: 'env',
      variable: 'INCEPTIOND_CAPTURE_WEBCAM_TIMEOUTMS',
      replacement: 'INCEPTIOND_CAPTURE_WEBCAM_TIMEOUT_MS',
    });
    // A daemon reloading a hundred times warns once; the result still lists the warnings each time.
    const second = loadConfig({ env, onWarning });
    expect(second.warnings).toHaveLength(2);
    expect(onWarning).toHaveBeenCalledTimes(2);
    expect(onWarning.mock.calls.map((c) => c[0])).toEqual(first.warnings);
  });

  it('when both names are set the new one wins, and the warning says so', () => {
    const { config, warnings, origins } = loadConfig({
      env: { INCEPTIOND_CAPTURE_INTERVAL_MS: '300', INCEPTIOND_CAPTURE_INTERVALMS: '900' },
    });
    expect(config.capture.intervalMs).toBe(300);
    expect(warnings).toEqual([
      'INCEPTIOND_CAPTURE_INTERVAL_MS and its deprecated alias INCEPTIOND_CAPTURE_INTERVALMS are both set: INCEPTIOND_CAPTURE_INTERVAL_MS wins and INCEPTIOND_CAPTURE_INTERVALMS is ignored (unset INCEPTIOND_CAPTURE_INTERVALMS)',
    ]);
    expect(origins['capture.intervalMs']).toEqual({ kind: 'env', variable: 'INCEPTIOND_CAPTURE_INTERVAL_MS' });
  });

  it('a wrong value names the variable that was actually set, alias or not', () => {
    const problem = (env: NodeJS.ProcessEnv) => {
      try {
        loadConfig({ env });
      } catch (err) {
        return (err as ConfigError).message;
      }
      throw new Error('accepted');
    };
    expect(problem({ INCEPTIOND_CAPTURE_INTERVALMS: 'soon' })).toBe(
      'invalid configuration: capture.intervalMs = "soon" (from INCEPTIOND_CAPTURE_INTERVALMS): must be a whole number from 0 to 2147483647',
    );
    expect(problem({ INCEPTIOND_CAPTURE_INTERVAL_MS: 'soon' })).toMatch(/\(from INCEPTIOND_CAPTURE_INTERVAL_MS\)/);
    // Cross-key checks too.
    expect(problem({ INCEPTIOND_MQTT_RECONNECTMINSEC: '90' })).toMatch(
      /mqtt\.reconnectMinSec = 90 \(from INCEPTIOND_MQTT_RECONNECTMINSEC\): must not exceed mqtt\.reconnectMaxSec/,
    );
  });

  it('keysSetByEnv (which `set` requests consult) counts the aliases, naming the variable set', () => {
    expect(keysSetByEnv({ INCEPTIOND_INFERENCE_TOPK: '3', INCEPTIOND_MQTT_QOS: '0', INCEPTIOND_HEALTH_STALL_SEC: '5' })).toEqual([
      { key: 'inference.topK', env: 'INCEPTIOND_INFERENCE_TOPK' },
      { key: 'mqtt.qos', env: 'INCEPTIOND_MQTT_QOS' },
      { key: 'health.stallSec', env: 'INCEPTIOND_HEALTH_STALL_SEC' },
    ]);
  });

  it('the README table gives the new name and lists the old one as deprecated', () => {
    const table = configKeysMarkdown();
    expect(table).toContain(
      '| `capture.webcam.timeoutMs` | `10000` | `INCEPTIOND_CAPTURE_WEBCAM_TIMEOUT_MS`<br>deprecated: `INCEPTIOND_CAPTURE_WEBCAM_TIMEOUTMS` |',
    );
    expect(table).toContain('| `mqtt.url` | `"mqtt://127.0.0.1:1883"` | `INCEPTIOND_MQTT_URL` |');
    for (const { legacyEnv } of KEYS) if (legacyEnv) expect(table).toContain(`deprecated: \`${legacyEnv}\``);
  });
});
