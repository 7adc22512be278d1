import { describe, expect, it } from 'vitest';
import { DaemonStatus, type HealthProbes } from '../../src/daemon/status.js';
import { DaemonEventBus } from '../../src/features/index.js';

function setup(over: Partial<HealthProbes> = {}) {
  const events = new DaemonEventBus();
  const probes = {
    stallMs: () => 60_000,
    oldestInferenceMs: () => 0,
    inferenceStallMs: () => 60_000,
    mqtt: () => ({ connected: true, oldestInflightMs: 0 }),
    maxAckWaitMs: () => 30_000,
    ...over,
  };
  const status = new DaemonStatus(events, probes);
  const changes: string[] = [];
  events.on('statusChanged', ({ state }) => changes.push(state));
  return { events, status, changes };
}

describe('DaemonStatus', () => {
  it('starts, goes online with the first sign of life, degrades with a failing source and says the present when it recovers', () => {
    const { events, status } = setup();
    status.addSource('camera');
    expect(status.state).toBe('starting');
    status.started();
    expect(status.state).toBe('online');

    events.emit('captureFailed', { source: 'camera', error: 'no /dev/video0', failures: 1 });
    expect(status.fields()).toMatchObject({
      state: 'degraded',
      error: 'camera: no /dev/video0',
      sources: { camera: { state: 'degraded', error: 'no /dev/video0' } },
    });

    events.emit('captureRecovered', { source: 'camera' });
    const fields = status.fields();
    expect(fields.state).toBe('online');
    expect(fields).not.toHaveProperty('error');
    expect(fields.sources.camera).toEqual({ state: 'online', paused: false, since: expect.any(String) });
  });

  it('an inference failure degrades until an inference succeeds; a finished source is not a failure', () => {
    const { events, status } = setup();
    status.addSource('files');
    status.started();
    events.emit('inference', { source: 'files', ok: false, error: 'worker died' });
    expect(status.fields()).toMatchObject({ state: 'degraded', error: 'inference failed: worker died' });
    events.emit('inference', { source: 'files', ok: true });
    expect(status.fields().state).toBe('online');
    events.emit('sourceFinished', { source: 'files' });
    expect(status.fields()).toMatchObject({ state: 'online', sources: { files: { state: 'finished' } } });
  });

  it('a clean stop says stopped, without the last error', () => {
    const { events, status, changes } = setup();
    status.addSource('camera');
    status.started();
    events.emit('captureFailed', { source: 'camera', error: 'gone', failures: 3 });
    status.stopped();
    expect(status.fields()).not.toHaveProperty('error');
    expect(status.fields().state).toBe('stopped');
    expect(changes.at(-1)).toBe('stopped');
  });

  it('masks credentials in the error texts it publishes', () => {
    const { events, status } = setup();
    status.addSource('door');
    status.started();
    events.emit('captureFailed', { source: 'door', error: 'ffmpeg: rtsp://cam:hunter2@10.0.0.5/live: Connection refused', failures: 1 });
    status.storageError('cannot write to sftp://u:pw@nas/outbox');
    const text = JSON.stringify(status.fields());
    expect(text).not.toContain('hunter2');
    expect(text).not.toContain(':pw@');
    expect(text).toContain('rtsp://cam:***@10.0.0.5/live');
  });

  it('a paused source is neither a failure nor stuck, and says it is paused', () => {
    let stall = 60_000;
    const { events, status } = setup({ stallMs: () => stall });
    status.addSource('camera');
    status.started();
    events.emit('captureFailed', { source: 'camera', error: 'no camera', failures: 1 });
    expect(status.state).toBe('degraded');
    events.emit('sourcePaused', { source: 'camera', paused: true });
    expect(status.fields()).toMatchObject({ state: 'online', sources: { camera: { state: 'degraded', paused: true } } });
    stall = -1;
    expect(status.health()).toMatchObject({ healthy: true });
    events.emit('sourcePaused', { source: 'camera', paused: false });
    expect(status.state).toBe('degraded');
    expect(status.health().stuck).toEqual([expect.stringMatching(/source "camera" made no progress/)]);
  });

  it('is healthy while parts make progress, even degraded; stuck parts make it unhealthy with the reason', () => {
    let inference = 0;
    let mqtt = { connected: true, oldestInflightMs: 0 };
    let stall = 60_000;
    const { events, status } = setup({
      oldestInferenceMs: () => inference,
      mqtt: () => mqtt,
      stallMs: () => stall,
    });
    status.addSource('camera');
    status.started();
    events.emit('captureFailed', { source: 'camera', error: 'no camera', failures: 1 });
    expect(status.health()).toMatchObject({ healthy: true, status: 'degraded', error: 'camera: no camera' });

    inference = 90_000; // an inference sent 90 s ago and never answered
    expect(status.health()).toMatchObject({
      healthy: false,
      status: 'unhealthy',
      stuck: [expect.stringMatching(/inference has not completed for 90 s/)],
    });
    inference = 0;

    mqtt = { connected: true, oldestInflightMs: 45_000 };
    expect(status.health().stuck).toEqual([expect.stringMatching(/broker has not acknowledged a Result for 45 s/)]);
    mqtt = { connected: false, oldestInflightMs: 45_000 }; // offline: the outbox keeps them, that is not stuck
    expect(status.health().healthy).toBe(true);

    stall = -1; // every source is now past its limit
    expect(status.health().stuck).toEqual([expect.stringMatching(/source "camera" made no progress/)]);
    inference = 90_000; // sources wait for a hung worker: only the worker is named
    expect(status.health().stuck).toEqual([expect.stringMatching(/inference has not completed/)]);
    inference = 0;
    events.emit('sourceFinished', { source: 'camera' });
    expect(status.health().healthy).toBe(true);
  });
});
