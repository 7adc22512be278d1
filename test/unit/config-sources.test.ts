import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, resolveSources } from '../../src/config/index.js';

function sourcesError(sources: unknown, extraEnv: NodeJS.ProcessEnv = {}): ConfigError {
  try {
    loadConfig({ env: { INCEPTIOND_SOURCES: JSON.stringify(sources), ...extraEnv } });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('sources were accepted');
}

describe('sources', () => {
  it('is the single source "camera" made of capture when empty', () => {
    const { config } = loadConfig({ env: { INCEPTIOND_CAPTURE_WEBCAM_DEVICE: '/dev/video3' } });
    expect(config.sources).toHaveLength(1);
    expect(config.sources[0]!.id).toBe('camera');
    expect(config.sources[0]!.webcam.device).toBe('/dev/video3');
  });

  it('fills what an entry leaves out from capture', () => {
    const { config } = loadConfig({
      env: {
        INCEPTIOND_CAPTURE_INTERVAL_MS: '500',
        INCEPTIOND_SOURCES: JSON.stringify([
          { id: 'door', backend: 'ffmpeg', ffmpeg: { input: 'rtsp://cam/door', fps: 5 } },
          { id: 'yard', webcam: { device: '/dev/video1' }, intervalMs: 2000 },
        ]),
      },
    });
    const [door, yard] = config.sources;
    expect(door).toMatchObject({
      id: 'door',
      backend: 'ffmpeg',
      intervalMs: 500,
      ffmpeg: { input: 'rtsp://cam/door', fps: 5, stallTimeoutMs: 10_000 },
    });
    expect(yard).toMatchObject({ id: 'yard', backend: 'webcam', intervalMs: 2000, webcam: { device: '/dev/video1', width: 640 } });
  });

  it('rejects a duplicate id, naming both entries', () => {
    const err = sourcesError([{ id: 'a' }, { id: 'b' }, { id: 'a' }]);
    expect(err.key).toBe('sources[2].id');
    expect(err.message).toContain('duplicates the id of sources[0]');
  });

  it('names the entry and key of a bad backend', () => {
    const err = sourcesError([{ id: 'a' }, { id: 'b', backend: 'gstreamer' }]);
    expect(err.key).toBe('sources[1].backend');
    expect(err.message).toBe('invalid configuration: sources[1].backend = "gstreamer": must be one of ["files","webcam","ffmpeg"]');
  });

  it('rejects ids that are not one topic level, and entries without id', () => {
    expect(sourcesError([{ id: 'front/door' }]).key).toBe('sources[0].id');
    expect(sourcesError([{ id: '#' }]).key).toBe('sources[0].id');
    expect(sourcesError([{ backend: 'webcam' }]).message).toMatch(/sources\[0\]\.id = null: is required/);
  });

  it('rejects unknown keys inside an entry with their full path', () => {
    expect(sourcesError([{ id: 'a', webcam: { devcie: 'x' } }]).message).toBe(
      'unknown key: sources[0].webcam.devcie (did you mean sources[0].webcam.device?)',
    );
  });

  it('requires the input each backend reads', () => {
    expect(sourcesError([{ id: 'a', backend: 'ffmpeg' }]).key).toBe('sources[0].ffmpeg.input');
    expect(sourcesError([{ id: 'a', backend: 'files' }]).key).toBe('sources[0].files.path');
    // the default source is checked under its own key
    expect(() => loadConfig({ env: { INCEPTIOND_CAPTURE_BACKEND: 'files' } })).toThrow(/capture\.files\.path/);
  });

  it('rejects sources env text that is not a JSON array', () => {
    expect(() => loadConfig({ env: { INCEPTIOND_SOURCES: '{oops' } })).toThrow(/sources = "\{oops".*must be an array/);
  });

  it('resolveSources gives the same list for already resolved sources', () => {
    const { config } = loadConfig({
      env: { INCEPTIOND_SOURCES: JSON.stringify([{ id: 'a' }, { id: 'b', backend: 'files', files: { path: '/srv/img' } }]) },
    });
    expect(resolveSources(config)).toEqual(config.sources);
  });
});
