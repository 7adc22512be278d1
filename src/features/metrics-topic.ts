/** `<base>/metrics` every `metrics.intervalSec` (0 = off): throughput, latency, drops, outbox, RSS. */
import type { Config } from '../config/index.js';
import type { Feature, FeatureContext } from './types.js';

export function metricsTopicFeature(): Feature {
  let ctx: FeatureContext | undefined;
  let timer: NodeJS.Timeout | undefined;
  const schedule = (config: Config) => {
    clearInterval(timer);
    timer = undefined;
    if (!ctx || config.metrics.intervalSec <= 0) return;
    const c = ctx;
    timer = setInterval(() => {
      const snapshot = { ...c.metrics.snapshot(), outbox: c.publisher.stats() };
      c.publisher.publishNow(c.topics.metrics, JSON.stringify(snapshot), { qos: 0, retain: false });
    }, config.metrics.intervalSec * 1000);
    timer.unref();
  };
  return {
    name: 'metrics topic',
    start(context) {
      ctx = context;
      schedule(context.config());
    },
    reload: schedule,
    stop() {
      clearInterval(timer);
      ctx = undefined;
    },
  };
}
