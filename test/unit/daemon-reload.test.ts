import { describe, expect, it } from 'vitest';
import { envName, loadConfig, type Config } from '../../src/config/index.js';
import { planReload } from '../../src/daemon/reload.js';

/** A config as the daemon would load it, from an object instead of a file. */
function config(over: Record<string, unknown> = {}): Config {
  const env: NodeJS.ProcessEnv = { INCEPTIOND_STATE_DIR: '/tmp/reload-test' };
  for (const [key, value] of Object.entries(over)) env[envName(key.split('.'))] = typeof value === 'string' ? value : JSON.stringify(value);
  return loadConfig({ env }).config;
}

describe('planReload', () => {
  it('applies what each frame reads at once and names what needs a restart, keeping its running value', () => {
    const current = config({ 'capture.backend': 'files', 'capture.files.path': '/a' });
    const next = config({
      'capture.backend': 'files',
      'capture.files.path': '/a',
      'inference.topK': 3,
      'inference.threshold': 0.2,
      'log.level': 'debug',
      'mqtt.url': 'mqtt://elsewhere:1883',
      'inference.threads': 1,
    });
    const plan = planReload(current, next);
    expect(plan.live).toEqual(['inference.threshold', 'inference.topK', 'log.level']);
    expect(plan.restartNeeded).toEqual(['inference.threads', 'mqtt.url']);
    expect(plan.effective.inference).toMatchObject({ topK: 3, threshold: 0.2, threads: current.inference.threads });
    expect(plan.effective.mqtt.url).toBe(current.mqtt.url);
    expect(plan.effective.log.level).toBe('debug');
    expect(plan.sources).toEqual({ added: [], removed: [], changed: [] });
  });

  it("applies a source's publish policy, motion gating and snapshot settings without restarting its camera", () => {
    const src = (extra: Record<string, unknown> = {}) => ({ id: 'door', backend: 'files', files: { path: '/d' }, ...extra });
    const current = config({ sources: [src()] });
    const next = config({
      sources: [src({ publish: { policy: 'change' }, motion: { enabled: true } })],
      'snapshot.onChange': true,
      'homeassistant.enabled': true,
      'control.allow': ['status'],
    });
    const plan = planReload(current, next);
    expect(plan.restartNeeded).toEqual([]);
    expect(plan.live).toEqual(expect.arrayContaining(['sources[0].publish.policy', 'sources[0].motion.enabled', 'control.allow']));
    expect(plan.sources).toEqual({ added: [], removed: [], changed: [] });
    expect(plan.effective.sources[0]).toMatchObject({
      publish: { policy: 'change' },
      motion: { enabled: true },
      snapshot: { onChange: true },
    });
    expect(plan.effective).toMatchObject({ homeassistant: { enabled: true }, control: { allow: ['status'] } });
    // A capture key of the same source restarts it.
    const moved = planReload(current, config({ sources: [src({ files: { path: '/other' } })] }));
    expect(moved.sources.changed.map((s) => s.id)).toEqual(['door']);
  });

  it('finds sources added, removed and changed, by id', () => {
    const src = (id: string, path: string) => ({ id, backend: 'files', files: { path } });
    const current = config({ sources: [src('door', '/d'), src('yard', '/y')] });
    const next = config({ sources: [src('door', '/d2'), src('gate', '/g')] });
    const plan = planReload(current, next);
    expect(plan.sources.added.map((s) => s.id)).toEqual(['gate']);
    expect(plan.sources.removed).toEqual(['yard']);
    expect(plan.sources.changed.map((s) => s.id)).toEqual(['door']);
    expect(plan.restartNeeded).toEqual([]);
    expect(plan.live.every((k) => k.startsWith('sources['))).toBe(true);
  });

  it('a changed capture interval restarts the default source; an unchanged config changes nothing', () => {
    const current = config({ 'capture.backend': 'files', 'capture.files.path': '/a' });
    const plan = planReload(current, config({ 'capture.backend': 'files', 'capture.files.path': '/a', 'capture.intervalMs': 250 }));
    expect(plan.live).toEqual(['capture.intervalMs', 'sources[0].intervalMs']);
    expect(plan.sources.changed.map((s) => s.id)).toEqual(['camera']);
    const same = planReload(current, config({ 'capture.backend': 'files', 'capture.files.path': '/a' }));
    expect([same.live, same.restartNeeded, same.sources.changed]).toEqual([[], [], []]);
  });
});
