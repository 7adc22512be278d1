import { afterEach, describe, expect, it } from 'vitest';
import { Metrics, SlidingWindow, percentile, type PublishingCounts } from '../../src/ops/index.js';

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

  it('reports process CPU per Result and per core over the interval, and by thread role', () => {
    let now = 0;
    let cpuUs = 5_000_000;
    const threads = { main: 1, inference: 2, other: 3 };
    const m = metrics({ now: () => now, cpuUsage: () => ({ user: cpuUs, system: 0 }), threadCpu: () => ({ ...threads }) });
    const idle = { msPerResult: null, percentOfOneCore: 0 };
    expect(m.peek().cpu).toEqual({ ...idle, threads: { main: idle, inference: idle, other: idle } });
    for (let i = 0; i < 10; i++) m.recordResult('camera', { preprocessMs: 1, inferenceMs: 1, totalMs: 1 });
    now = 2_000;
    cpuUs += 300_000; // 300 ms of CPU over 2 s and 10 Results: 40 on the main thread, 200 inference, 60 other
    threads.main += 0.04;
    threads.inference += 0.2;
    threads.other += 0.06;
    expect(m.snapshot().cpu).toEqual({
      msPerResult: 30,
      percentOfOneCore: 15,
      threads: {
        main: { msPerResult: 4, percentOfOneCore: 2 },
        inference: { msPerResult: 20, percentOfOneCore: 10 },
        other: { msPerResult: 6, percentOfOneCore: 3 },
      },
    });
    now = 4_000;
    expect(m.snapshot().cpu).toEqual({ ...idle, threads: { main: idle, inference: idle, other: idle } });
  });

  it('has no thread figures where threads cannot be read', () => {
    const m = metrics({ threadCpu: () => undefined });
    expect(m.snapshot().cpu.threads).toBeNull();
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
    m.requestAnswered('status', true);
    const text = await m.prometheus();
    expect(text).toContain('inceptiond_control_requests_total{op="status",status="ok"} 1');
    expect(text).toContain('inceptiond_frames_captured_total{source="camera"} 2');
    expect(text).toContain('inceptiond_results_total{source="camera"} 1');
    expect(text).toContain('inceptiond_frames_dropped_total{source="camera",reason="corrupt"} 1');
    expect(text).toContain('inceptiond_mqtt_connected 1');
    expect(text).toContain('inceptiond_inference_duration_seconds_sum 0.012');
    expect(text).toContain('inceptiond_frame_latency_seconds_bucket{le="0.01"} 0');
    expect(text).toContain('inceptiond_frame_latency_seconds_bucket{le="0.025"} 1');
    expect(text).toContain('inceptiond_frame_latency_seconds_bucket{le="60"} 1');
    expect(text).toContain('inceptiond_frame_latency_seconds_sum 0.02');
    expect(text).toContain('inceptiond_frame_latency_seconds_count 1');
  });

  it('exposes CPU by thread role as counters that only grow', async () => {
    const threads = { main: 1.5, inference: 4, other: 0.5 };
    const m = metrics({ threadCpu: () => ({ ...threads }) });
    let text = await m.prometheus();
    expect(text).toContain('inceptiond_thread_cpu_seconds_total{thread="main"} 1.5');
    expect(text).toContain('inceptiond_thread_cpu_seconds_total{thread="inference"} 4');
    expect(text).toContain('inceptiond_thread_cpu_seconds_total{thread="other"} 0.5');
    threads.inference = 6.25;
    text = await m.prometheus();
    expect(text).toContain('inceptiond_thread_cpu_seconds_total{thread="inference"} 6.25');
    expect(text).toContain('inceptiond_thread_cpu_seconds_total{thread="main"} 1.5');
  });

  it('leaves the thread counters out where threads cannot be read', async () => {
    expect(await metrics({ threadCpu: () => undefined }).prometheus()).not.toContain('inceptiond_thread_cpu_seconds_total{');
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

/** The value of one sample line (`name{labels} value`), or undefined when absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('Prometheus conventions', () => {
  it('exposes the default process and Node.js metrics under their standard names', async () => {
    const text = await metrics().prometheus();
    for (const name of [
      'process_cpu_seconds_total',
      'process_cpu_user_seconds_total',
      'process_resident_memory_bytes',
      'process_start_time_seconds',
      'process_open_fds',
      'nodejs_heap_size_used_bytes',
      'nodejs_heap_size_total_bytes',
      'nodejs_eventloop_lag_seconds',
      'nodejs_version_info',
    ]) {
      expect(text, name).toMatch(new RegExp(`^# TYPE ${name} `, 'm'));
    }
    expect(text).not.toMatch(/^inceptiond_(process|nodejs)_/m);
  });

  it('names every metric by the conventions: inceptiond_ prefix, _total on counters only, units in base units', async () => {
    const text = await metrics().prometheus();
    const types = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map(([, name, type]) => ({ name: name!, type: type! }));
    const ours = types.filter((t) => t.name.startsWith('inceptiond_'));
    expect(ours.length).toBeGreaterThan(20);
    for (const { name, type } of ours) {
      expect(name, name).toMatch(/^inceptiond_[a-z0-9_]+$/);
      if (type === 'counter') expect(name, `${name} is a counter`).toMatch(/_total$/);
      else expect(name, `${name} is a ${type}`).not.toMatch(/_total$/);
      expect(name, `${name}: base units`).not.toMatch(/_(ms|milliseconds|kb|mb|kilobytes|megabytes|percent)(_|$)/);
      if (type === 'histogram') expect(name, `${name}: a duration in seconds`).toMatch(/_seconds$/);
    }
    const names = ours.map((t) => t.name);
    expect(names).toEqual(
      expect.arrayContaining([
        'inceptiond_frame_latency_seconds',
        'inceptiond_outbox_messages',
        'inceptiond_outbox_bytes',
        'inceptiond_mqtt_messages_published_total',
        'inceptiond_mqtt_publish_failures_total',
        'inceptiond_mqtt_reconnects_total',
        'inceptiond_mqtt_connection_errors_total',
        'inceptiond_model_info',
        'inceptiond_control_requests_total',
      ]),
    );
    // The misleading or duplicate names are gone.
    for (const old of [
      'inceptiond_total_duration_seconds',
      'inceptiond_frame_age_seconds',
      'inceptiond_outbox_depth',
      'inceptiond_cpu_seconds_per_result',
      'inceptiond_requests_total',
    ]) {
      expect(names).not.toContain(old);
    }
  });

  it('says which model runs: inceptiond_model_info{model,precision,provider} 1, replaced when set again', async () => {
    const m = metrics();
    m.setModelInfo({ model: 'inception-v2', precision: 'int8', provider: 'cpu' });
    expect(sample(await m.prometheus(), 'inceptiond_model_info{model="inception-v2",precision="int8",provider="cpu"}')).toBe(1);
    m.setModelInfo({ model: 'inception-v2', precision: 'fp32', provider: 'webgpu' });
    const text = await m.prometheus();
    expect(sample(text, 'inceptiond_model_info{model="inception-v2",precision="fp32",provider="webgpu"}')).toBe(1);
    expect(text).not.toContain('precision="int8"');
  });
});

describe('Metrics of the publisher', () => {
  const zero: PublishingCounts = {
    connected: false,
    outboxDepth: 0,
    outboxBytes: 0,
    dropped: 0,
    expired: 0,
    published: 0,
    livePublished: 0,
    failed: 0,
    liveDropped: 0,
    reconnects: 0,
    connectionErrors: 0,
    outboxWriteErrors: 0,
    outboxCorrupt: 0,
  };

  it('reads the counts at each scrape: gauges as they are, counters by their increase', async () => {
    const m = metrics();
    let counts: PublishingCounts = { ...zero };
    m.trackPublishing(() => counts);
    let text = await m.prometheus();
    expect(sample(text, 'inceptiond_mqtt_messages_published_total{kind="result"}')).toBe(0);
    expect(sample(text, 'inceptiond_mqtt_reconnects_total')).toBe(0);
    expect(sample(text, 'inceptiond_outbox_dropped_total{reason="expired"}')).toBe(0);

    counts = {
      ...zero,
      connected: true,
      outboxDepth: 4,
      outboxBytes: 2048,
      dropped: 2,
      expired: 1,
      published: 10,
      livePublished: 3,
      failed: 1,
      liveDropped: 5,
      reconnects: 1,
      connectionErrors: 7,
      outboxWriteErrors: 2,
      outboxCorrupt: 1,
    };
    text = await m.prometheus();
    expect(sample(text, 'inceptiond_mqtt_connected')).toBe(1);
    expect(sample(text, 'inceptiond_outbox_messages')).toBe(4);
    expect(sample(text, 'inceptiond_outbox_bytes')).toBe(2048);
    expect(sample(text, 'inceptiond_outbox_dropped_total{reason="limit"}')).toBe(2);
    expect(sample(text, 'inceptiond_outbox_dropped_total{reason="expired"}')).toBe(1);
    expect(sample(text, 'inceptiond_mqtt_messages_published_total{kind="result"}')).toBe(10);
    expect(sample(text, 'inceptiond_mqtt_messages_published_total{kind="other"}')).toBe(3);
    expect(sample(text, 'inceptiond_mqtt_publish_failures_total{kind="result"}')).toBe(1);
    expect(sample(text, 'inceptiond_mqtt_publish_failures_total{kind="other"}')).toBe(5);
    expect(sample(text, 'inceptiond_mqtt_reconnects_total')).toBe(1);
    expect(sample(text, 'inceptiond_mqtt_connection_errors_total')).toBe(7);
    expect(sample(text, 'inceptiond_outbox_write_failures_total')).toBe(2);
    expect(sample(text, 'inceptiond_outbox_corrupt_records_total')).toBe(1);

    // Scraping again without news changes nothing; the next increase adds up.
    expect(sample(await m.prometheus(), 'inceptiond_mqtt_messages_published_total{kind="result"}')).toBe(10);
    counts = { ...counts, published: 12, outboxDepth: 0, outboxBytes: 0, connected: false };
    text = await m.prometheus();
    expect(sample(text, 'inceptiond_mqtt_messages_published_total{kind="result"}')).toBe(12);
    expect(sample(text, 'inceptiond_outbox_bytes')).toBe(0);
    expect(sample(text, 'inceptiond_mqtt_connected')).toBe(0);
    // The snapshot reads them too; its outbox.dropped counts the bounds' drops.
    expect(m.peek().outbox).toEqual({ depth: 0, dropped: 2 });
  });

  it('a count lower than before (a new publisher) starts over instead of going backwards', async () => {
    const m = metrics();
    let counts: PublishingCounts = { ...zero, published: 5 };
    m.trackPublishing(() => counts);
    counts = { ...zero, published: 2 };
    expect(sample(await m.prometheus(), 'inceptiond_mqtt_messages_published_total{kind="result"}')).toBe(7);
  });
});
