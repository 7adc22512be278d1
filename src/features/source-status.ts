/**
 * Per-source availability, retained on `<base>/<source>/status`: `{"state": "online" | "degraded" |
 * "finished" | "offline", "paused": bool, "error"?: …, "since": …}` beside the daemon's own status. A
 * source removed by a reload has its topic cleared; a clean stop leaves `offline`. A crash cannot
 * change these topics (MQTT has one will per connection, and it is on `<base>/status`): a consumer
 * judges a source by both, as the Home Assistant discovery does (docs/ARCHITECTURE.md, "Contracts").
 */
import type { Feature, FeatureContext } from './types.js';

export function sourceStatusFeature(): Feature {
  let ctx: FeatureContext | undefined;
  /** What was last published per source (JSON), so an unchanged status is not sent again. */
  const published = new Map<string, string>();

  const sync = () => {
    const c = ctx;
    if (!c) return;
    const sources = (c.status.payload().sources ?? {}) as Record<string, Record<string, unknown>>;
    for (const [id, status] of Object.entries(sources)) send(c, id, JSON.stringify(status));
    for (const id of [...published.keys()]) {
      if (id in sources) continue;
      // Removed: an empty retained message deletes the topic on the broker.
      if (c.publisher.publishNow(c.topics.sourceStatus(id), '', { qos: 1, retain: true })) published.delete(id);
    }
  };
  const send = (c: FeatureContext, id: string, json: string) => {
    if (published.get(id) === json) return;
    if (
      c.publisher.publishNow(c.topics.sourceStatus(id), json, { qos: 1, retain: true, properties: { contentType: 'application/json' } })
    ) {
      published.set(id, json);
    }
  };
  const onConnection = (connected: boolean) => {
    if (!connected) return;
    published.clear();
    sync();
  };

  return {
    name: 'source status',
    start(context) {
      ctx = context;
      context.events.on('statusChanged', sync);
      context.publisher.onConnectionChange(onConnection);
      sync();
    },
    stop() {
      const c = ctx;
      if (!c) return;
      c.events.off('statusChanged', sync);
      const sources = (c.status.payload().sources ?? {}) as Record<string, Record<string, unknown>>;
      const since = new Date().toISOString();
      for (const [id, status] of Object.entries(sources)) {
        send(c, id, JSON.stringify({ state: 'offline', paused: status.paused ?? false, since }));
      }
      ctx = undefined;
    },
  };
}
