import { createServer } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { httpFeature } from '../../src/features/http.js';
import type { FeatureContext, HealthReport as DaemonHealth } from '../../src/features/types.js';
import { createSilentLogger, HttpListenError, Metrics, startHttpServer, type HealthReport, type HttpServer } from '../../src/ops/index.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function start(health: () => HealthReport, status: () => unknown = () => ({ state: 'online' })) {
  const metrics = new Metrics();
  cleanups.push(() => metrics.close());
  const server: HttpServer = await startHttpServer({
    host: '127.0.0.1',
    port: 0,
    logger: createSilentLogger(),
    metrics,
    health,
    status,
  });
  cleanups.push(() => server.close());
  const url = (path: string) => `http://127.0.0.1:${server.port}${path}`;
  return { metrics, server, url };
}

describe('HTTP server', () => {
  it('answers /healthz 200 with status ok when healthy, 503 when not', async () => {
    let report: HealthReport = { healthy: true, state: 'online' };
    const { url } = await start(() => report);

    const ok = await fetch(url('/healthz'));
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ status: 'ok', healthy: true, state: 'online' });

    report = { healthy: false, state: 'degraded', status: 'degraded', error: 'camera: no frames' };
    const degraded = await fetch(url('/healthz'));
    expect(degraded.status).toBe(503);
    expect(await degraded.json()).toMatchObject({ status: 'degraded', error: 'camera: no frames' });

    report = { healthy: false };
    const down = await fetch(url('/healthz'));
    expect(down.status).toBe(503);
    expect(await down.json()).toMatchObject({ status: 'unhealthy' });
  });

  it('serves Prometheus text with what was recorded', async () => {
    const { url, metrics } = await start(() => ({ healthy: true }));
    metrics.frameCaptured('door');
    metrics.recordResult('door', { preprocessMs: 1, inferenceMs: 2, totalMs: 3 });
    const res = await fetch(url('/metrics'));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await res.text();
    expect(text).toContain('inceptiond_frames_captured_total{source="door"} 1');
    expect(text).toContain('inceptiond_results_total{source="door"} 1');
    expect(text).toContain('inceptiond_frame_latency_seconds_count 1');
    // The standard process and Node.js metrics, under their standard names.
    expect(text).toMatch(/^process_cpu_seconds_total \d/m);
    expect(text).toMatch(/^process_resident_memory_bytes \d/m);
    expect(text).toMatch(/^nodejs_heap_size_used_bytes \d/m);
  });

  it('serves /status as JSON from the callback', async () => {
    const { url } = await start(
      () => ({ healthy: true }),
      () => ({ state: 'online', provider: 'cpu' }),
    );
    const res = await fetch(url('/status?x=1'));
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ state: 'online', provider: 'cpu' });
  });

  it('answers 404 for unknown paths and 405 for other methods', async () => {
    const { url } = await start(() => ({ healthy: true }));
    expect((await fetch(url('/nope'))).status).toBe(404);
    const post = await fetch(url('/healthz'), { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
    const head = await fetch(url('/healthz'), { method: 'HEAD' });
    expect(head.status).toBe(200);
  });

  it('answers 500 when a callback throws', async () => {
    const { url } = await start(
      () => ({ healthy: true }),
      () => {
        throw new Error('status exploded');
      },
    );
    const res = await fetch(url('/status'));
    expect(res.status).toBe(500);
    expect(await res.json()).toEqual({ error: 'status exploded' });
  });

  it('reports a port in use clearly', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
    const port = (blocker.address() as { port: number }).port;
    const metrics = new Metrics();
    cleanups.push(() => metrics.close());
    const err = await startHttpServer({
      host: '127.0.0.1',
      port,
      logger: createSilentLogger(),
      metrics,
      health: () => ({ healthy: true }),
      status: () => ({}),
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HttpListenError);
    expect((err as HttpListenError).code).toBe('EADDRINUSE');
    expect((err as Error).message).toContain(`127.0.0.1:${port}`);
  });
});

describe('HTTP feature', () => {
  it('masks credentials in URLs in the /status and /healthz bodies (an ffmpeg error names its input)', async () => {
    const error = 'door: ffmpeg source "door" (rtsp://admin:S3cr3t@10.0.0.5/x?password=S3cr3t): Connection refused';
    const metrics = new Metrics();
    cleanups.push(() => metrics.close());
    const health: DaemonHealth = { healthy: true, status: 'degraded', state: 'degraded', error, mqttConnected: true };
    const ctx = {
      config: () => ({ http: { host: '127.0.0.1', port: 0 } }),
      logger: createSilentLogger(),
      metrics,
      status: { payload: () => ({ state: 'degraded', error, sources: { door: { state: 'degraded', error } } }), health: () => health },
    } as unknown as FeatureContext;
    const feature = httpFeature();
    await feature.start(ctx);
    cleanups.push(() => feature.stop());
    const base = `http://127.0.0.1:${feature.port}`;
    const status = await (await fetch(`${base}/status`)).text();
    const healthz = await (await fetch(`${base}/healthz`)).text();
    for (const body of [status, healthz]) {
      expect(body).not.toContain('S3cr3t');
      expect(body).toContain('rtsp://admin:***@10.0.0.5/x?password=***');
    }
    expect(JSON.parse(status)).toMatchObject({ state: 'degraded', sources: { door: { state: 'degraded' } } });
    expect(JSON.parse(healthz)).toMatchObject({ healthy: true, status: 'degraded', mqttConnected: true });
  });
});

describe('HTTP server bound beyond loopback', () => {
  async function warningsWhenBoundTo(host: string): Promise<string[]> {
    const { pino } = await import('pino');
    const { Writable } = await import('node:stream');
    const warnings: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString().split('\n').filter(Boolean)) {
          const entry = JSON.parse(line) as { level: number; msg: string };
          if (entry.level === 40) warnings.push(entry.msg);
        }
        done();
      },
    });
    const metrics = new Metrics();
    cleanups.push(() => metrics.close());
    const server = await startHttpServer({
      host,
      port: 0,
      logger: pino({ level: 'debug' }, sink),
      metrics,
      health: () => ({ healthy: true }),
      status: () => ({}),
    });
    cleanups.push(() => server.close());
    return warnings;
  }

  it('warns that /status and /metrics are reachable without authentication on 0.0.0.0, not on 127.0.0.1', async () => {
    const open = await warningsWhenBoundTo('0.0.0.0');
    expect(open).toHaveLength(1);
    expect(open[0]).toMatch(/non-loopback.*\/status.*\/metrics.*without authentication/);
    expect(await warningsWhenBoundTo('127.0.0.1')).toEqual([]);
  });
});
