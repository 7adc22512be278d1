/** Requests on `<base>/request/<op>`, answered on `<base>/response/<op>`: `status` and `metrics`. */
import type { Feature, FeatureContext } from './types.js';

export function controlFeature(): Feature {
  return {
    name: 'control',
    start(ctx: FeatureContext) {
      ctx.publisher.onRequest('status', () => ctx.status.payload());
      // peek, not snapshot: a request must not reset the interval the metrics topic reports on.
      ctx.publisher.onRequest('metrics', () => ctx.metrics.peek());
    },
    stop() {},
  };
}
