import { afterEach, describe, expect, it } from 'vitest';
import { Metrics, SlidingWindow, percentile } from '../../src/ops/index.js';

const open: Metrics[] = [];
function metrics(options?: ConstructorParameters<typeof Metrics>[0]): Metrics {
  const m = new Metrics(options);
  open.push(m);
  return m;
}
afterEach(() => {
  for (const m of open.splice(0)) m.close();
});

describe('percentile (nearest rank)', () => {
  it('matches hand-computed ranks', () => {
    const sorted = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    expect(percentile(sorted, 50)).toBe(5); // ceil(0.5 * 10) = 5th
    expect(percentile(sorted, 90)).toBe(9); // 9th
    expect(percentile(sorted, 99)).toBe(10); // ceil(9.9) = 10th
    expect(percentile([42], 1)).toBe(42);
    expect(percentile([], 50)).toBeNull();
  });

  it('keeps only the last samples of the window', () => {
    const w = new SlidingWindow(1000);
    for (let v = 1; v <= 1100; v++) w.push(v);
    // holds 101..1100: the 500th is 600, the 900th 1000, the 990th 1090
    expect(w.size).toBe(1000);
    expect(w.percentiles()).toEqual({ p50: 600, p90: 1000, p99: 1090 });
  });
});

describe('Metrics.snapshot', () => {
  it('reports latency percentiles, fps per source, drops and failures', () => {
    let now = 0;
    const m = metrics({ now: () => now });
    // inference 1..100 ms in shuffled order: percentiles must not depend on arrival order
    const order = Array.from({ length: 100 }, (_, i) => ((i * 37) % 100) + 1);
    for (const ms of order) m.recordResult('camera', { preprocessMs: 2, inferenceMs: ms, totalMs: ms + 10 });
    for (let i = 0; i < 20; i++) m.recordResult('door', { preprocessMs: 1, inferenceMs: 5, totalMs: 8 });
    m.frameDropped('camera', 'stale');
    m.frameDropped('camera', 'stale');
    m.frameDropped('door', 'corrupt');
    m.captureFailed('door');
    m.setOutboxDepth(7);
    m.outboxDroppedMessages(3);
    now = 10_000;

    const snap = m.snapshot();
    // 120 inference samples: 100 of 1..100 and 20 of 5 → sorted: 1..4, then 5 ×21, 6..100
    // p50 = 60th sample: 1..4 (4), 5 (21) = 25, so the 60th is 6 + (60 - 26) = 40
    expect(snap.latencyMs.inference).toEqual({ p50: 40, p90: 88, p99: 99 });
    expect(snap.latencyMs.preprocess).toEqual({ p50: 2, p90: 2, p99: 2 });
    expect(snap.fps).toEqual({ camera: 10, door: 2 });
    expect(snap.drops).toEqual({ stale: 2, corrupt: 1, inference: 0 });
    expect(snap.captureFailures).toBe(1);
    expect(snap.outbox).toEqual({ depth: 7, dropped: 3 });
    expect(snap.uptimeSec).toBe(10);
    expect(snap.rssBytes).toBeGreaterThan(0);
    expect(new Date(snap.ts).toISOString()).toBe(snap.ts);
  });

  it('starts a new fps interval at each snapshot, and peek does not', () => {
    let now = 0;
    const m = metrics({ now: () => now });
    for (let i = 0; i < 30; i++) m.recordResult('camera', { preprocessMs: 1, inferenceMs: 1, totalMs: 1 });
    now = 10_000;
    expect(m.peek().fps.camera).toBe(3);
    expect(m.snapshot().fps.camera).toBe(3);
    for (let i = 0; i < 5; i++) m.recordResult('camera', { preprocessMs: 1, inferenceMs: 1, totalMs: 1 });
    now = 15_000;
    expect(m.snapshot().fps.camera).toBe(1);
  });

  it('reports process CPU per Result and per core over the interval', () => {
    let now = 0;
    let cpuUs = 5_000_000;
    const m = metrics({ now: () => now, cpuUsage: () => ({ user: cpuUs, system: 0 }) });
    expect(m.peek().cpu).toEqual({ msPerResult: null, percentOfOneCore: 0 });
    for (let i = 0; i < 10; i++) m.recordResult('camera', { preprocessMs: 1, inferenceMs: 1, totalMs: 1 });
    now = 2_000;
    cpuUs += 300_000; // 300 ms of CPU over 2 s and 10 Results
    expect(m.snapshot().cpu).toEqual({ msPerResult: 30, percentOfOneCore: 15 });
    now = 4_000;
    expect(m.snapshot().cpu).toEqual({ msPerResult: null, percentOfOneCore: 0 });
  });

  it('reports null percentiles before any result', () => {
    expect(metrics().snapshot().latencyMs.total).toEqual({ p50: null, p90: null, p99: null });
  });
});

describe('Metrics Prometheus text', () => {
  it('exposes the recorded counters with their labels', async () => {
    const m = metrics();
    m.frameCaptured('camera');
    m.frameCaptured('camera');
    m.recordResult('camera', { preprocessMs: 3, inferenceMs: 12, totalMs: 20 });
    m.frameDropped('camera', 'corrupt');
    m.setMqttConnected(true);
    const text = await m.prometheus();
    expect(text).toContain('inceptiond_frames_captured_total{source="camera"} 2');
    expect(text).toContain('inceptiond_results_total{source="camera"} 1');
    expect(text).toContain('inceptiond_frames_dropped_total{source="camera",reason="corrupt"} 1');
    expect(text).toContain('inceptiond_mqtt_connected 1');
    expect(text).toContain('inceptiond_inference_duration_seconds_sum 0.012');
    expect(text).toContain('inceptiond_process_resident_memory_bytes');
    expect(text).toContain('inceptiond_frame_age_seconds_bucket{le="0.025"} 1');
    expect(text).toContain('inceptiond_frame_age_seconds_count 1');
    expect(text).toMatch(/^inceptiond_cpu_seconds_per_result \d/m);
  });

  it('counts stale frames by the number the source replaced', async () => {
    const m = metrics();
    m.frameDropped('camera', 'stale', 5);
    m.frameDropped('camera', 'stale');
    expect(m.peek().drops.stale).toBe(6);
    expect(await m.prometheus()).toContain('inceptiond_frames_dropped_total{source="camera",reason="stale"} 6');
  });

  it('keeps instances apart (no global registry)', async () => {
    const a = metrics();
    const b = metrics();
    a.frameCaptured('camera');
    expect(await b.prometheus()).not.toContain('inceptiond_frames_captured_total{source="camera"}');
  });
});
