/**
 * Snapshots: the newest frame of a source as JPEG on `<base>/<source>/snapshot` — on request (the
 * `snapshot` operation, Home Assistant's button) and, when `snapshot.onChange` is set for the source,
 * when its top label changes (at most one per `snapshot.minIntervalSec`). Retained or not by
 * `snapshot.retain`, at most `snapshot.maxBytes` (a larger frame is re-encoded smaller).
 */
import type { SnapshotConfig } from '../config/index.js';
import { encodeSnapshot } from '../vision/index.js';
import type { Feature, FeatureContext } from './types.js';

export interface SnapshotReport {
  source: string;
  topic: string;
  bytes: number;
  capturedAt: string;
}

/** One encode per source at a time: a burst of requests shares it instead of queueing encodes. */
const encoding = new WeakMap<FeatureContext, Map<string, Promise<SnapshotReport>>>();

/** Publishes the newest frame of `source`; rejects with the reason when there is none or the broker is away. */
export function publishSnapshot(ctx: FeatureContext, source: string): Promise<SnapshotReport> {
  let running = encoding.get(ctx);
  if (!running) encoding.set(ctx, (running = new Map()));
  const pending = running.get(source);
  if (pending) return pending;
  const work = encodeAndPublish(ctx, source).finally(() => running.delete(source));
  running.set(source, work);
  return work;
}

async function encodeAndPublish(ctx: FeatureContext, source: string): Promise<SnapshotReport> {
  const frame = ctx.sources.latestFrame(source);
  if (!frame) throw new Error(`source "${source}" has no frame yet`);
  const settings = snapshotSettings(ctx, source);
  const jpeg = await encodeSnapshot(frame.data, settings.maxBytes);
  const topic = ctx.topics.snapshot(source);
  const sent = ctx.publisher.publishNow(topic, jpeg, { qos: 1, retain: settings.retain, properties: { contentType: 'image/jpeg' } });
  if (!sent) throw new Error('not connected to the broker: snapshot not published');
  return { source, topic, bytes: jpeg.length, capturedAt: frame.capturedAt.toISOString() };
}

function snapshotSettings(ctx: FeatureContext, source: string): SnapshotConfig {
  const config = ctx.config();
  return config.sources.find((s) => s.id === source)?.snapshot ?? config.snapshot;
}

/** Snapshots when a source's top label changes (the first Result after start counts as a change). */
export function snapshotOnChangeFeature(): Feature {
  const lastTop = new Map<string, string>();
  const lastSent = new Map<string, number>();
  let ctx: FeatureContext | undefined;
  const onResult = ({ source, result }: { source: string; result: { labels: Array<{ label: string }> } }) => {
    const c = ctx;
    if (!c) return;
    const top = result.labels[0]?.label ?? '';
    const changed = lastTop.get(source) !== top;
    lastTop.set(source, top);
    const settings = snapshotSettings(c, source);
    if (!changed || !settings.onChange) return;
    const now = Date.now();
    if (now - (lastSent.get(source) ?? Number.NEGATIVE_INFINITY) < settings.minIntervalSec * 1000) return;
    lastSent.set(source, now);
    publishSnapshot(c, source).catch((err: unknown) =>
      c.logger.debug({ source, err: (err as Error).message }, 'snapshot on change not published'),
    );
  };
  return {
    name: 'snapshots on change',
    start(context) {
      ctx = context;
      context.events.on('result', onResult);
    },
    stop() {
      ctx?.events.off('result', onResult);
      ctx = undefined;
    },
  };
}
