/**
 * Optional in-process broker (Aedes 1.2, MQTT 3.1.1 only) for a board with no broker of its own.
 * If the port is already taken by an MQTT broker, the daemon publishes to that one instead.
 */
import net from 'node:net';
import mqtt from 'mqtt';
import type { Logger } from 'pino';

export interface EmbeddedBroker {
  /** URL the daemon itself connects to (loopback when listening on a wildcard address). */
  url: string;
  close(): Promise<void>;
}

export interface EmbeddedBrokerOptions {
  host: string;
  port: number;
  logger: Logger;
}

const PROBE_TIMEOUT_MS = 3_000;

/**
 * Starts the broker; resolves null when an MQTT broker already listens on the port. Throws a clear
 * error when the port is taken by something else or cannot be bound.
 */
export async function startEmbeddedBroker({ host, port, logger }: EmbeddedBrokerOptions): Promise<EmbeddedBroker | null> {
  const { Aedes } = await import('aedes');
  const broker = await Aedes.createBroker();
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    broker.handle(socket);
  });
  broker.on('clientError', (client, err) => logger.debug({ err, clientId: client.id }, 'embedded broker: client error'));

  const connectHost = host === '0.0.0.0' || host === '::' || host === '' ? '127.0.0.1' : host;
  const url = `mqtt://${connectHost.includes(':') ? `[${connectHost}]` : connectHost}:${port}`;
  const closeBroker = () => new Promise<void>((resolve) => broker.close(() => resolve()));

  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    await closeBroker();
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') {
      if (await speaksMqtt(url)) {
        logger.info({ url }, 'embedded broker: an MQTT broker already listens on this port; using it');
        return null;
      }
      throw new Error(`embedded broker: ${host}:${port} is in use by something that does not speak MQTT`, { cause: err });
    }
    throw new Error(`embedded broker: cannot listen on ${host}:${port}: ${(err as Error).message}`, { cause: err });
  }
  server.on('error', (err) => logger.error({ err }, 'embedded broker: server error'));

  return {
    url,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
      await closeBroker();
    },
  };
}

/** An MQTT CONNACK (accepted or refused, e.g. "not authorized") proves a broker is there. */
async function speaksMqtt(url: string): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const client = mqtt.connect(url, {
      protocolVersion: 4,
      reconnectPeriod: 0,
      connectTimeout: PROBE_TIMEOUT_MS,
      clientId: `inceptiond-probe-${process.pid}`,
    });
    let settled = false;
    const finish = (result: boolean) => {
      if (settled) return;
      settled = true;
      client.end(true);
      resolve(result);
    };
    client.once('connect', () => finish(true));
    client.on('error', (err) => finish(typeof (err as { code?: unknown }).code === 'number'));
    client.once('close', () => finish(false));
  });
}
