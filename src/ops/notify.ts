// systemd notification protocol (sd_notify): READY=1, STATUS=, STOPPING=1 and watchdog pings.
//
// Node cannot open the AF_UNIX SOCK_DGRAM socket systemd listens on (dgram knows only udp4/udp6), so the
// optional native module unix-dgram sends the datagrams; messages then come from our own PID and work
// with NotifyAccess=main. Without it (not built on this board) we spawn `systemd-notify`, whose messages
// may carry its own PID: the unit needs NotifyAccess=all then (our unit file sets it). unix-dgram copies
// the socket path with strncpy, so it cannot address abstract sockets ("@name"); those go through
// systemd-notify too.
import { spawn } from 'node:child_process';
import type { Logger } from 'pino';
import { maskUrlCredentials } from '../config/index.js';

export interface Notifier {
  /** False when not started by systemd with Type=notify (NOTIFY_SOCKET unset): every call is a no-op. */
  readonly enabled: boolean;
  /** Ping period (half of WatchdogSec=), or undefined when systemd runs no watchdog for us. */
  readonly watchdogIntervalMs: number | undefined;
  /** Start-up finished. Resolves when sent; never rejects (failures are logged). */
  ready(status?: string): Promise<void>;
  /**
   * Free-form text shown by `systemctl status`. With extendTimeoutMs, also asks systemd for that much
   * more start-up time (EXTEND_TIMEOUT_USEC=): a first start that builds or quantizes the model on a
   * small board can outlast TimeoutStartSec.
   */
  status(text: string, options?: { extendTimeoutMs?: number }): Promise<void>;
  stopping(status?: string): Promise<void>;
  /**
   * A reload began (RELOADING=1, with MONOTONIC_USEC as systemd ≥ 253 wants it); the daemon sends
   * READY=1 when it is done.
   */
  reloading(): Promise<void>;
  /**
   * Pings WATCHDOG=1 every watchdogIntervalMs, but only while isHealthy() returns true: a pipeline that
   * is stuck must stop the pings so systemd kills and restarts us (WatchdogSec=, Restart=on-failure).
   */
  startWatchdog(isHealthy: () => boolean): void;
  /** Stops the watchdog and closes the socket. */
  stop(): void;
}

export interface NotifierOptions {
  logger: Logger;
  /** Default process.env. */
  env?: NodeJS.ProcessEnv;
  /** 'auto' (default): unix-dgram when it loads, else systemd-notify. 'systemd-notify' forces the fallback. */
  transport?: 'auto' | 'systemd-notify';
  /** The module that provides AF_UNIX datagram sockets. Default 'unix-dgram' (tests name a missing one). */
  unixDgramModule?: string;
}

/** The part of unix-dgram we use (it ships no types). */
interface DgramSocket {
  send(buf: Buffer, offset: number, length: number, path: string, callback: (err?: Error) => void): void;
  on(event: 'error', listener: (err: Error) => void): void;
  close(): void;
}
interface UnixDgramModule {
  createSocket(type: 'unix_dgram'): DgramSocket;
}

type Send = (message: string) => Promise<void>;

const SPAWN_TIMEOUT_MS = 5_000;

export function createNotifier(options: NotifierOptions): Notifier {
  const env = options.env ?? process.env;
  const logger = options.logger.child({ component: 'sd-notify' });
  const socketPath = env.NOTIFY_SOCKET || undefined;
  const watchdogIntervalMs = watchdogInterval(env, logger);

  if (socketPath === undefined) {
    return {
      enabled: false,
      watchdogIntervalMs: undefined,
      ready: async () => undefined,
      status: async () => undefined,
      stopping: async () => undefined,
      reloading: async () => undefined,
      startWatchdog: () => undefined,
      stop: () => undefined,
    };
  }

  let socket: DgramSocket | undefined;
  let sendPromise: Promise<Send> | undefined;
  let stopped = false;
  let watchdogTimer: NodeJS.Timeout | undefined;
  // One message at a time: spawned systemd-notify processes would otherwise race (STOPPING before READY).
  let queue: Promise<void> = Promise.resolve();
  const reported = new Set<string>();

  const warnOnce = (key: string, obj: object, msg: string) => {
    if (reported.has(key)) return;
    reported.add(key);
    logger.warn(obj, msg);
  };

  const spawnSend: Send = (message) =>
    new Promise<void>((resolve) => {
      const args = [`--pid=${process.pid}`, ...message.split('\n')];
      const child = spawn('systemd-notify', args, {
        env: { ...env, NOTIFY_SOCKET: socketPath },
        stdio: 'ignore',
        timeout: SPAWN_TIMEOUT_MS,
      });
      child.once('error', (err) => {
        warnOnce(
          `spawn:${(err as NodeJS.ErrnoException).code}`,
          { err },
          'cannot run systemd-notify: systemd will not see READY or watchdog pings',
        );
        resolve();
      });
      child.once('exit', (code, signal) => {
        if (code !== 0) warnOnce(`exit:${code}:${signal}`, { code, signal, message }, 'systemd-notify failed');
        resolve();
      });
    });

  const chooseTransport = async (): Promise<Send> => {
    if (options.transport === 'systemd-notify' || socketPath.startsWith('@')) return spawnSend;
    let mod: UnixDgramModule;
    try {
      const name = options.unixDgramModule ?? 'unix-dgram';
      const imported = (await import(name)) as { default?: UnixDgramModule } & Partial<UnixDgramModule>;
      mod = (imported.default ?? imported) as UnixDgramModule;
    } catch (err) {
      logger.info({ err: (err as Error).message }, 'unix-dgram not available: using systemd-notify (needs NotifyAccess=all)');
      return spawnSend;
    }
    socket = mod.createSocket('unix_dgram');
    socket.on('error', (err) => warnOnce(`socket:${(err as NodeJS.ErrnoException).code}`, { err }, 'notify socket error'));
    const open = socket;
    return (message) =>
      new Promise<void>((resolve) => {
        const buf = Buffer.from(message);
        open.send(buf, 0, buf.length, socketPath, (err) => {
          if (err)
            warnOnce(`send:${(err as NodeJS.ErrnoException).code ?? err.message}`, { err, socket: socketPath }, 'cannot notify systemd');
          resolve();
        });
      });
  };

  const notify = (message: string): Promise<void> => {
    if (stopped) return Promise.resolve();
    sendPromise ??= chooseTransport();
    queue = queue.then(async () => {
      if (stopped && !message.startsWith('STOPPING')) return;
      const send = await sendPromise!;
      await send(message);
    });
    return queue;
  };

  // `systemctl status` shows STATUS= to anyone on the machine: credentials in a URL (the broker's, an RTSP camera's) are masked.
  const statusLine = (text: string) => `STATUS=${maskUrlCredentials(text).replace(/[\r\n]+/g, ' ')}`;

  return {
    enabled: true,
    watchdogIntervalMs,
    ready: (status) => notify(status === undefined ? 'READY=1' : `READY=1\n${statusLine(status)}`),
    status: (text, { extendTimeoutMs } = {}) =>
      notify(extendTimeoutMs ? `${statusLine(text)}\nEXTEND_TIMEOUT_USEC=${Math.round(extendTimeoutMs * 1000)}` : statusLine(text)),
    stopping: (status) => notify(status === undefined ? 'STOPPING=1' : `STOPPING=1\n${statusLine(status)}`),
    reloading: () => notify(`RELOADING=1\nMONOTONIC_USEC=${monotonicUsec()}\n${statusLine('reloading the configuration')}`),
    startWatchdog(isHealthy) {
      if (watchdogIntervalMs === undefined || stopped) return;
      if (watchdogTimer) clearInterval(watchdogTimer);
      let withholding = false;
      const tick = () => {
        let healthy: boolean;
        try {
          healthy = isHealthy();
        } catch (err) {
          logger.error({ err }, 'health check threw: treating as unhealthy');
          healthy = false;
        }
        if (healthy) {
          if (withholding) logger.info('healthy again: resuming watchdog pings');
          withholding = false;
          void notify('WATCHDOG=1');
        } else if (!withholding) {
          withholding = true;
          logger.warn({ watchdogIntervalMs }, 'unhealthy: withholding watchdog pings, systemd restarts us if this lasts');
        }
      };
      tick();
      watchdogTimer = setInterval(tick, watchdogIntervalMs);
      watchdogTimer.unref();
    },
    stop() {
      stopped = true;
      if (watchdogTimer) clearInterval(watchdogTimer);
      watchdogTimer = undefined;
      // Close after queued messages (STOPPING=1) went out.
      void queue.then(() => {
        try {
          socket?.close();
        } catch {
          // already closed
        }
        socket = undefined;
      });
    },
  };
}

/** Half of WATCHDOG_USEC in ms, if the watchdog is meant for this process (WATCHDOG_PID unset or ours). */
function watchdogInterval(env: NodeJS.ProcessEnv, logger: Logger): number | undefined {
  if (!env.WATCHDOG_USEC) return undefined;
  const usec = Number(env.WATCHDOG_USEC);
  if (!Number.isSafeInteger(usec) || usec <= 0) {
    logger.warn({ WATCHDOG_USEC: env.WATCHDOG_USEC }, 'ignoring invalid WATCHDOG_USEC');
    return undefined;
  }
  if (env.WATCHDOG_PID && env.WATCHDOG_PID !== String(process.pid)) return undefined;
  return Math.max(1, Math.floor(usec / 2 / 1000));
}

/** CLOCK_MONOTONIC in µs, as systemd reads it (process.hrtime is that clock on Linux). */
function monotonicUsec(): string {
  return (process.hrtime.bigint() / 1000n).toString();
}
