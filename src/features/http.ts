/** GET /healthz, /status and /metrics on `http.host:http.port`. */
import { startHttpServer, type HttpServer } from '../ops/index.js';
import { maskCredentialsDeep } from '../ops/index.js';
import type { Feature } from './types.js';

export interface HttpFeature extends Feature {
  /** The port bound (0 asked = ephemeral), once started. */
  readonly port: number | undefined;
}

export function httpFeature(): HttpFeature {
  let server: HttpServer | undefined;
  return {
    name: 'http',
    get port() {
      return server?.port;
    },
    async start(ctx) {
      const { host, port } = ctx.config().http;
      server = await startHttpServer({
        host,
        port,
        logger: ctx.logger,
        metrics: ctx.metrics,
        // The bodies carry error texts (an ffmpeg error names its input URL): credentials in URLs are masked.
        health: () => maskCredentialsDeep(ctx.status.health()),
        status: () => maskCredentialsDeep(ctx.status.payload()),
      });
    },
    async stop() {
      await server?.close();
      server = undefined;
    },
  };
}
