// GET /healthz (for load balancers, Docker HEALTHCHECK, curl in scripts), /metrics (Prometheus) and
// /status (the status payload, for humans). Plain node:http: three routes do not need a framework.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { isIPv4, type AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { maskUrlCredentials } from '../config/index.js';
import type { Metrics } from './metrics.js';

export interface HealthReport {
  /** 200 when true, 503 otherwise. */
  healthy: boolean;
  /** Shown as "status"; default "ok" when healthy, "unhealthy" otherwise. */
  status?: 'ok' | 'degraded' | 'unhealthy';
  [detail: string]: unknown;
}

export interface HttpServerOptions {
  host: string;
  /** 0 = ephemeral; the bound port is in the result. */
  port: number;
  logger: Logger;
  metrics: Metrics;
  health: () => HealthReport | Promise<HealthReport>;
  status: () => unknown;
}

export interface HttpServer {
  /** The port actually bound. */
  port: number;
  close(): Promise<void>;
}

export class HttpListenError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'HttpListenError';
  }
}

type Route = (req: IncomingMessage, res: ServerResponse) => Promise<void>;

export async function startHttpServer(options: HttpServerOptions): Promise<HttpServer> {
  const { logger, metrics } = options;

  const routes: Record<string, Route> = {
    '/healthz': async (_req, res) => {
      const report = await options.health();
      const body = { status: report.status ?? (report.healthy ? 'ok' : 'unhealthy'), ...report };
      sendJson(res, report.healthy ? 200 : 503, body);
    },
    '/metrics': async (_req, res) => {
      const text = await metrics.prometheus();
      send(res, 200, metrics.contentType, text);
    },
    '/status': async (_req, res) => {
      sendJson(res, 200, await options.status());
    },
  };

  const server = createServer((req, res) => {
    const pathname = new URL(req.url ?? '/', 'http://localhost').pathname;
    const route = Object.hasOwn(routes, pathname) ? routes[pathname] : undefined;
    if (route === undefined) {
      sendJson(res, 404, { error: `not found: ${pathname}`, endpoints: Object.keys(routes) });
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      sendJson(res, 405, { error: `method ${req.method} not allowed` });
      return;
    }
    route(req, res).catch((err: unknown) => {
      logger.error({ err, path: pathname }, 'HTTP handler failed');
      if (!res.headersSent) sendJson(res, 500, { error: maskUrlCredentials((err as Error).message ?? String(err)) });
      else res.destroy();
    });
  });
  // The daemon runs for months: a client that opens a connection and sends nothing must not hold it.
  server.headersTimeout = 10_000;
  server.requestTimeout = 15_000;

  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      const hint =
        err.code === 'EADDRINUSE'
          ? ' (another process uses the port: change http.port, or set it to 0)'
          : err.code === 'EADDRNOTAVAIL'
            ? ' (no interface has that address: check http.host)'
            : err.code === 'EACCES'
              ? ' (ports below 1024 need privileges)'
              : '';
      reject(
        new HttpListenError(`cannot listen for HTTP on ${options.host}:${options.port}: ${err.code ?? err.message}${hint}`, err.code, {
          cause: err,
        }),
      );
    };
    server.once('error', onError);
    server.listen(options.port, options.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', (err) => logger.error({ err }, 'HTTP server error'));

  const { port, address } = server.address() as AddressInfo;
  logger.debug({ host: options.host, port }, 'HTTP server listening');
  if (!isLoopback(address)) {
    logger.warn(
      { host: options.host, address, port },
      'HTTP: listening on a non-loopback address: /status (with error texts) and /metrics are reachable from the network ' +
        'without authentication; bind http.host to 127.0.0.1 unless that is intended (or firewall the port)',
    );
  }
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Keep-alive connections (Prometheus scrapers) would otherwise hold close() open.
        server.closeAllConnections();
      }),
  };
}

/** The address actually bound: "localhost" resolves to one of these; 0.0.0.0 and :: are every interface. */
function isLoopback(address: string): boolean {
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return address === '::1' || (isIPv4(v4) && v4.startsWith('127.'));
}

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  send(res, code, 'application/json; charset=utf-8', `${JSON.stringify(body)}\n`);
}

function send(res: ServerResponse, code: number, contentType: string, body: string): void {
  res.writeHead(code, {
    'Content-Type': contentType,
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
  });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}
