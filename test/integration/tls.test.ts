/**
 * TLS with the real daemon process and a real Mosquitto TLS listener, certificates made by openssl here:
 * a verified connection (mqtts:// + mqtt.ca) delivers Results; a wrong CA, an expired certificate and a
 * certificate for another host are refused, each with a log line saying which; a broker that wants
 * client certificates takes mqtt.cert/mqtt.key and refuses a client without them; `doctor` checks the
 * broker with the same TLS files as the daemon.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { collect, startTlsBroker, type Collector, type TestBroker } from '../helpers/broker.js';
import { runCli, startDaemon, writeConfig, type DaemonProcess, type LogLine } from '../helpers/daemon-process.js';
import { hasOpenssl, SKIP, testBrokerKind } from '../helpers/tools.js';
import { sharedModelEnv } from '../global-setup.js';

const canRun = hasOpenssl() && testBrokerKind() === 'mosquitto';

let work: string;
let certs: string;
let imagesDir: string;
/** good: server.pem; expired: expired.pem; otherHost: a certificate for broker.example; clientAuth: wants client certificates. */
const brokers: Partial<Record<'good' | 'expired' | 'otherHost' | 'clientAuth', TestBroker>> = {};
const daemons: DaemonProcess[] = [];
const collectors: Collector[] = [];

const pem = (name: string) => path.join(certs, name);

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { cwd: certs, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A self-signed CA: `<name>.pem`, `<name>.key`. */
function makeCa(name: string, cn: string): void {
  openssl(
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.pem`,
    '-days',
    '3',
    '-subj',
    `/CN=${cn}`,
  );
}

/** A certificate signed by `ca`: `<name>.pem`, `<name>.key`; `days` -1 makes one that has expired. */
async function makeCert(name: string, ca: string, opts: { cn: string; ext: string[]; days?: number }): Promise<void> {
  await writeFile(pem(`${name}.ext`), `${['basicConstraints=CA:FALSE', ...opts.ext].join('\n')}\n`);
  openssl(
    'req',
    '-new',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.csr`,
    '-subj',
    `/CN=${opts.cn}`,
  );
  openssl(
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    `${ca}.pem`,
    '-CAkey',
    `${ca}.key`,
    '-set_serial',
    String(Date.now() + Math.floor(Math.random() * 1e6)),
    '-days',
    String(opts.days ?? 3),
    '-extfile',
    `${name}.ext`,
    '-out',
    `${name}.pem`,
  );
}

beforeAll(async () => {
  if (!canRun) return;
  work = await mkdtemp(path.join(tmpdir(), 'inceptiond-tls-'));
  certs = path.join(work, 'certs');
  await mkdir(certs);
  makeCa('ca', 'inceptiond test CA');
  makeCa('ca2', 'another CA');
  const server = ['subjectAltName=IP:127.0.0.1,DNS:localhost', 'extendedKeyUsage=serverAuth'];
  await makeCert('server', 'ca', { cn: '127.0.0.1', ext: server });
  await makeCert('expired', 'ca', { cn: '127.0.0.1', ext: server, days: -1 });
  await makeCert('other', 'ca', { cn: 'broker.example', ext: ['subjectAltName=DNS:broker.example', 'extendedKeyUsage=serverAuth'] });
  await makeCert('client', 'ca', { cn: 'inceptiond-client', ext: ['extendedKeyUsage=clientAuth'] });
  // Mosquitto started as root reads them as its own user.
  for (const dir of [work, certs]) chmodSync(dir, 0o755);
  for (const f of readdirSync(certs)) chmodSync(pem(f), 0o644);

  const tls = (certfile: string, requireCertificate = false) =>
    startTlsBroker({ cafile: pem('ca.pem'), certfile: pem(`${certfile}.pem`), keyfile: pem(`${certfile}.key`), requireCertificate });
  [brokers.good, brokers.expired, brokers.otherHost, brokers.clientAuth] = await Promise.all([
    tls('server'),
    tls('expired'),
    tls('other'),
    tls('server', true),
  ]);

  imagesDir = path.join(work, 'images');
  await mkdir(imagesDir);
  for (const [i, background] of ['#c03020', '#2040c0'].entries()) {
    await sharp({ create: { width: 160, height: 120, channels: 3, background } })
      .jpeg()
      .toFile(path.join(imagesDir, `frame-${i}.jpg`));
  }
});

beforeEach((ctx) => {
  ctx.skip(!hasOpenssl(), SKIP.openssl);
  ctx.skip(testBrokerKind() !== 'mosquitto', SKIP.mosquittoTls);
});

afterEach(async () => {
  await Promise.all(daemons.splice(0).map((d) => d.stop('SIGKILL')));
  await Promise.all(collectors.splice(0).map((c) => c.close()));
});

afterAll(async () => {
  await Promise.all(Object.values(brokers).map((b) => b?.stop()));
  if (work) await rm(work, { recursive: true, force: true });
});

interface Setup {
  name: string;
  url: string;
  mqtt?: Record<string, unknown>;
}

async function daemonConfig({ name, url, mqtt = {} }: Setup) {
  const dir = path.join(work, name);
  const baseTopic = `tls/${name}`;
  const file = await writeConfig(dir, {
    deviceId: name,
    stateDir: path.join(dir, 'state'),
    capture: { backend: 'files', intervalMs: 100, files: { path: imagesDir, loop: true } },
    mqtt: { url, baseTopic, protocolVersion: 5, ca: pem('ca.pem'), ...mqtt },
    http: { enabled: false },
    metrics: { intervalSec: 0 },
    log: { level: 'info' },
  });
  return { file, baseTopic, labels: `${baseTopic}/camera/labels` };
}

function run(file: string): DaemonProcess {
  const daemon = startDaemon(['run', '-c', file], sharedModelEnv(inject('modelCacheDir')));
  daemons.push(daemon);
  return daemon;
}

/** A subscriber over TLS that trusts the test CA (and shows the client certificate when given). */
async function watch(broker: TestBroker, topicFilter: string, clientCert = false): Promise<Collector> {
  const c = await collect(broker.url, topicFilter, {
    ca: readFileSync(pem('ca.pem')),
    ...(clientCert ? { cert: readFileSync(pem('client.pem')), key: readFileSync(pem('client.key')) } : {}),
  });
  collectors.push(c);
  return c;
}

/** The publisher's warning about a failed connection attempt (a TLS failure may get its own wording). */
const isRefusal = (l: LogLine) => l.level === 40 && /^mqtt: (cannot reach the broker|TLS)/.test(l.msg);

/** The daemon's log line about the refused connection, and proof that it never connected. */
async function refusal(daemon: DaemonProcess): Promise<{ line: LogLine; text: string; code: string | undefined }> {
  const line = await daemon.waitForLog(isRefusal);
  expect(daemon.logs.some((l) => l.msg === 'mqtt: connected')).toBe(false);
  const err = line.err as { message?: string; code?: string } | undefined;
  return { line, text: JSON.stringify(line), code: err?.code };
}

describe('MQTT over TLS (Mosquitto TLS listener, certificates from openssl)', () => {
  it('delivers Results over a verified connection (mqtts:// and mqtt.ca)', async () => {
    const broker = brokers.good!;
    const t = await daemonConfig({ name: 'verified', url: broker.url });
    const sub = await watch(broker, t.labels);
    const daemon = run(t.file);
    const results = await sub.waitForCount(2);
    expect(JSON.parse(results[0]!.text)).toMatchObject({ source: 'camera', seq: 1 });
    const connected = await daemon.waitForLog((l) => l.msg === 'mqtt: connected');
    expect(connected.url).toBe(broker.url);
    expect(daemon.logs.filter(isRefusal)).toEqual([]);
  });

  it('refuses a broker whose certificate is signed by another CA, is expired, or is for another host; the log says which', async () => {
    const [wrongCa, expired, otherHost] = await Promise.all([
      daemonConfig({ name: 'wrong-ca', url: brokers.good!.url, mqtt: { ca: pem('ca2.pem') } }),
      daemonConfig({ name: 'expired', url: brokers.expired!.url }),
      daemonConfig({ name: 'other-host', url: brokers.otherHost!.url }),
    ]);
    const sub = await watch(brokers.good!, `${wrongCa.baseTopic}/#`);
    const [a, b, c] = [run(wrongCa.file), run(expired.file), run(otherHost.file)];
    const [untrusted, old, mismatch] = await Promise.all([refusal(a), refusal(b), refusal(c)]);

    // Not signed by mqtt.ca: OpenSSL's "unable to verify the first certificate" (the broker sends its certificate without the chain).
    expect(untrusted.code).toMatch(/^(UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY|SELF_SIGNED_CERT_IN_CHAIN)$/);
    expect(untrusted.line.msg).toMatch(
      /^mqtt: TLS: certificate verify failed: the broker's certificate is not signed by mqtt\.ca \(.*ca2\.pem\)/,
    );
    expect(old.code).toBe('CERT_HAS_EXPIRED');
    expect(old.line.msg).toMatch(/^mqtt: TLS: certificate verify failed: the broker's certificate has expired/);
    expect(mismatch.code).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
    expect(mismatch.line.msg).toMatch(/^mqtt: TLS: hostname mismatch/);
    expect(mismatch.text).toContain('127.0.0.1');
    // The broker got nothing from the daemon that does not trust it.
    expect(sub.messages).toEqual([]);
  });

  it('authenticates with a client certificate (mqtt.cert, mqtt.key) and is refused without one', async () => {
    const broker = brokers.clientAuth!;
    const withCert = await daemonConfig({
      name: 'client-cert',
      url: broker.url,
      mqtt: { cert: pem('client.pem'), key: pem('client.key') },
    });
    const without = await daemonConfig({ name: 'no-client-cert', url: broker.url });
    const sub = await watch(broker, 'tls/+/camera/labels', true);
    const good = run(withCert.file);
    const bad = run(without.file);
    await sub.waitForCount(2, { filter: (m) => m.topic === withCert.labels });
    await good.waitForLog((l) => l.msg === 'mqtt: connected');
    const refused = await refusal(bad);
    expect(refused.text).toMatch(/certificate required|handshake failure|bad certificate|peer did not return a certificate/i);
    expect(sub.messages.filter((m) => m.topic === without.labels)).toEqual([]);
  });

  it('doctor checks the broker with the same TLS files as the daemon: ok with the right CA, FAIL with the reason with another', async () => {
    const [right, wrong] = await Promise.all([
      daemonConfig({ name: 'doctor-ok', url: brokers.good!.url }),
      daemonConfig({ name: 'doctor-wrong-ca', url: brokers.good!.url, mqtt: { ca: pem('ca2.pem') } }),
    ]);
    const env = sharedModelEnv(inject('modelCacheDir'));
    const [ok, fail] = await Promise.all([
      runCli(['doctor', '--json', '-c', right.file], env),
      runCli(['doctor', '--json', '-c', wrong.file], env),
    ]);
    const brokerCheck = (out: string) =>
      (JSON.parse(out) as { checks: Array<{ name: string; ok: boolean; detail: string }> }).checks.find((c) => c.name === 'MQTT broker');
    expect(brokerCheck(ok.stdout)).toMatchObject({ ok: true, detail: expect.stringContaining('TLS verified with mqtt.ca') });
    expect(ok.code).toBe(0);
    const failed = brokerCheck(fail.stdout);
    expect(failed?.ok).toBe(false);
    expect(failed?.detail).toContain('certificate verify failed');
    expect(failed?.detail).toContain('ca2.pem');
    expect(fail.code).toBe(1);
  });
});
