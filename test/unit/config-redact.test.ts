import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, configToJSON, loadConfig, readSecretFile, redactConfig } from '../../src/config/index.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'inceptiond-secrets-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('redactConfig', () => {
  it('masks credentials in URLs but keeps paths to secrets visible', () => {
    const passwordFile = path.join(dir, 'pass');
    writeFileSync(passwordFile, 'hunter2\n');
    const { config } = loadConfig({
      env: {
        INCEPTIOND_MQTT_URL: 'mqtts://cam:hunter2@broker.lan:8883',
        INCEPTIOND_MQTT_PASSWORD_FILE: passwordFile,
        INCEPTIOND_SOURCES: JSON.stringify([
          { id: 'door', backend: 'ffmpeg', ffmpeg: { input: 'rtsp://admin:s3cret@10.0.0.5/stream?token=abc123' } },
        ]),
      },
    });
    const printed = configToJSON(config);
    expect(printed).not.toContain('hunter2');
    expect(printed).not.toContain('s3cret');
    expect(printed).not.toContain('abc123');
    expect(printed).toContain('mqtts://cam:***@broker.lan:8883');
    expect(printed).toContain(passwordFile);
    // the original is not modified
    expect(config.mqtt.url).toBe('mqtts://cam:hunter2@broker.lan:8883');
  });

  it('replaces values of secret-named keys', () => {
    const redacted = redactConfig({ mqtt: { password: 'p', passwordFile: '/etc/p' }, api: { token: 't', tokenFile: '' } });
    expect(redacted).toEqual({ mqtt: { password: '[redacted]', passwordFile: '/etc/p' }, api: { token: '[redacted]', tokenFile: '' } });
  });
});

describe('readSecretFile', () => {
  it('removes one trailing newline and keeps other whitespace', async () => {
    const file = path.join(dir, 'pw1');
    writeFileSync(file, ' two words \n\n');
    expect(await readSecretFile(file, 'mqtt.passwordFile')).toBe(' two words \n');
  });

  it('names the key and path, never the content, when it cannot read', async () => {
    const file = path.join(dir, 'absent');
    const err = await readSecretFile(file, 'mqtt.passwordFile').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).message).toBe(`cannot read mqtt.passwordFile ${file}: ENOENT`);
    expect((err as ConfigError).key).toBe('mqtt.passwordFile');
  });

  it('rejects an empty secret', async () => {
    const file = path.join(dir, 'empty');
    writeFileSync(file, '\n');
    await expect(readSecretFile(file, 'mqtt.passwordFile')).rejects.toThrow(/is empty/);
  });
});
