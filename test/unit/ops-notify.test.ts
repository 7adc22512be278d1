import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createNotifier, createSilentLogger, type Notifier } from '../../src/ops/index.js';
import { loadUnixDgram, SKIP } from '../helpers/tools.js';

interface Listener {
  bind(path: string): void;
  on(event: 'message', cb: (buf: Buffer) => void): void;
  close(): void;
}
// An optionalDependency: without it (no compiler on the board) the daemon falls back to systemd-notify,
// and the tests that need a real datagram socket say they were skipped.
const unixDgram = loadUnixDgram<{ createSocket(type: 'unix_dgram'): Listener }>();

/** A fake systemd: a datagram socket collecting what the notifier sends. */
class FakeSystemd {
  readonly messages: string[] = [];
  private waiters: Array<{ match: (m: string) => boolean; resolve: (m: string) => void }> = [];
  private readonly socket: Listener;

  constructor(readonly path: string) {
    this.socket = unixDgram!.createSocket('unix_dgram');
    this.socket.on('message', (buf) => {
      const message = buf.toString();
      this.messages.push(message);
      this.waiters = this.waiters.filter((w) => {
        if (!w.match(message)) return true;
        w.resolve(message);
        return false;
      });
    });
    this.socket.bind(path);
  }

  /** Resolves with the first message (already received or future) that matches. */
  next(match: (m: string) => boolean): Promise<string> {
    const seen = this.messages.find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve) => this.waiters.push({ match, resolve }));
  }

  close(): void {
    this.socket.close();
  }
}

let dir: string;
let socketPath: string;
let notifier: Notifier | undefined;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'inceptiond-notify-'));
  socketPath = path.join(dir, 'notify.sock');
});
afterEach(() => {
  notifier?.stop();
  notifier = undefined;
  rmSync(dir, { recursive: true, force: true });
});

describe('systemd notifier (unix-dgram)', () => {
  let systemd: FakeSystemd;
  beforeEach((ctx) => {
    ctx.skip(!unixDgram, SKIP.unixDgram);
    systemd = new FakeSystemd(socketPath);
    return () => systemd.close();
  });

  function start(env: NodeJS.ProcessEnv): Notifier {
    notifier = createNotifier({ logger: createSilentLogger(), env: { NOTIFY_SOCKET: systemd.path, ...env } });
    return notifier;
  }

  it('sends READY with status, STATUS and STOPPING', async () => {
    const n = start({});
    expect(n.enabled).toBe(true);
    await n.ready('publishing to mqtt://broker');
    await n.status('degraded: camera: no frames\nretrying');
    await n.status('quantizing (once)', { extendTimeoutMs: 600_000 });
    await n.stopping();
    await systemd.next((m) => m === 'STOPPING=1');
    expect(systemd.messages).toEqual([
      'READY=1\nSTATUS=publishing to mqtt://broker',
      'STATUS=degraded: camera: no frames retrying',
      'STATUS=quantizing (once)\nEXTEND_TIMEOUT_USEC=600000000',
      'STOPPING=1',
    ]);
  });

  it('masks credentials in URLs in STATUS=, which `systemctl status` shows to every user', async () => {
    const n = start({});
    await n.ready('publishing to mqtt://user:S3cr3t@broker:1883 as cams');
    await n.status('degraded: camera: ffmpeg source "door" (rtsp://admin:S3cr3t@10.0.0.5/stream?token=S3cr3t): refused');
    await n.stopping('stopping mqtt://user:S3cr3t@broker');
    await systemd.next((m) => m.startsWith('STOPPING=1'));
    expect(systemd.messages.join('\n')).not.toContain('S3cr3t');
    expect(systemd.messages).toEqual([
      'READY=1\nSTATUS=publishing to mqtt://user:***@broker:1883 as cams',
      'STATUS=degraded: camera: ffmpeg source "door" (rtsp://admin:***@10.0.0.5/stream?token=*** refused', // the value runs to the next space
      'STOPPING=1\nSTATUS=stopping mqtt://user:***@broker',
    ]);
  });

  it('pings the watchdog only while healthy', async () => {
    const n = start({ WATCHDOG_USEC: '20000' });
    expect(n.watchdogIntervalMs).toBe(10);
    let calls = 0;
    let healthy = false;
    n.startWatchdog(() => {
      calls++;
      // After three unhealthy checks, send a marker: datagrams arrive in order, so any ping sent while
      // unhealthy would be received before it.
      if (calls === 3) void n.status('probe');
      if (calls > 3) healthy = true;
      return healthy;
    });
    await systemd.next((m) => m === 'STATUS=probe');
    const beforeProbe = systemd.messages.slice(0, systemd.messages.indexOf('STATUS=probe'));
    expect(beforeProbe).not.toContain('WATCHDOG=1');

    await systemd.next((m) => m === 'WATCHDOG=1');
    expect(calls).toBeGreaterThan(3);
  });
});

describe('systemd notifier without systemd', () => {
  it('runs no watchdog when WATCHDOG_PID names another process', () => {
    notifier = createNotifier({
      logger: createSilentLogger(),
      env: { NOTIFY_SOCKET: socketPath, WATCHDOG_USEC: '20000', WATCHDOG_PID: String(process.pid + 1) },
    });
    expect(notifier.watchdogIntervalMs).toBeUndefined();
    let called = false;
    notifier.startWatchdog(() => (called = true));
    expect(called).toBe(false);
  });

  it('is a no-op when NOTIFY_SOCKET is unset', async () => {
    const n = createNotifier({ logger: createSilentLogger(), env: { WATCHDOG_USEC: '20000' } });
    expect(n.enabled).toBe(false);
    expect(n.watchdogIntervalMs).toBeUndefined();
    await n.ready('x');
    let called = false;
    n.startWatchdog(() => (called = true));
    expect(called).toBe(false);
    n.stop();
  });
});

describe('systemd notifier via systemd-notify', () => {
  /** A fake systemd-notify on PATH that records the socket it was given and its arguments. */
  function fakeSystemdNotify(): string {
    const bin = path.join(dir, 'bin');
    const log = path.join(dir, 'calls.log');
    mkdirSync(bin);
    writeFileSync(path.join(bin, 'systemd-notify'), `#!/bin/sh\necho "$NOTIFY_SOCKET $*" >> '${log}'\n`);
    chmodSync(path.join(bin, 'systemd-notify'), 0o755);
    return log;
  }

  it('spawns systemd-notify with --pid when forced', async () => {
    const log = fakeSystemdNotify();
    notifier = createNotifier({
      logger: createSilentLogger(),
      env: { NOTIFY_SOCKET: socketPath, PATH: `${path.join(dir, 'bin')}:/usr/bin:/bin` },
      transport: 'systemd-notify',
    });
    await notifier.ready('up');
    await notifier.stopping();
    expect(readFileSync(log, 'utf8').trim().split('\n')).toEqual([
      `${socketPath} --pid=${process.pid} READY=1 STATUS=up`,
      `${socketPath} --pid=${process.pid} STOPPING=1`,
    ]);
  });

  it('falls back to systemd-notify when unix-dgram cannot be loaded (not built on this board)', async () => {
    const log = fakeSystemdNotify();
    notifier = createNotifier({
      logger: createSilentLogger(),
      env: { NOTIFY_SOCKET: socketPath, PATH: `${path.join(dir, 'bin')}:/usr/bin:/bin` },
      unixDgramModule: 'unix-dgram-not-installed',
    });
    await notifier.ready('up');
    expect(readFileSync(log, 'utf8').trim()).toBe(`${socketPath} --pid=${process.pid} READY=1 STATUS=up`);
  });

  it('uses systemd-notify for abstract sockets, which unix-dgram cannot address', async () => {
    const log = fakeSystemdNotify();
    notifier = createNotifier({
      logger: createSilentLogger(),
      env: { NOTIFY_SOCKET: '@inceptiond-test', PATH: `${path.join(dir, 'bin')}:/usr/bin:/bin` },
    });
    await notifier.ready();
    expect(readFileSync(log, 'utf8').trim()).toBe(`@inceptiond-test --pid=${process.pid} READY=1`);
  });
});
