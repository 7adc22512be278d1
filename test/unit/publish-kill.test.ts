// kill -9 during a broker outage: a real child process queues Results through the compiled publish
// module and is SIGKILLed; a fresh process (this one) must deliver every Result in order and
// continue the seq without reusing a number.
import { execFile, spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MqttPublisher, Outbox, SeqStore, type Result } from '../../src/publish/index.js';
import { collect, startBroker, startProxy, type TestBroker } from '../helpers/broker.js';

const root = resolve(import.meta.dirname, '../..');
const logger = pino({ level: 'silent' });
const BASE = 'inceptiond/kill-test';
let compiled: string;
let broker: TestBroker;

const CHILD = `
import { join } from 'node:path';
import { pino } from 'pino';
import { Outbox, MqttPublisher, SeqStore, buildResult } from './publish/index.js';
const [stateDir, url, count] = process.argv.slice(2);
const logger = pino({ level: 'silent' });
const outbox = await Outbox.open(join(stateDir, 'outbox'), { maxMessages: 10000, maxBytes: 1e8, maxAgeSec: 0 }, logger);
const seq = SeqStore.open(stateDir, outbox, logger);
const publisher = new MqttPublisher({ url, clientId: 'kill-child', baseTopic: '${BASE}', outbox, qos: 1,
  statusPayload: () => ({ state: 'online' }), reconnectPeriodMs: 100 }, logger);
await publisher.start();
for (let i = 0; i < Number(count); i++) {
  await publisher.enqueueResult(buildResult({ seq: seq.next('camera'), source: 'camera',
    frame: { capturedAt: new Date(), width: 4, height: 4 }, model: { name: 'm', precision: 'fp32' }, provider: 'cpu',
    labels: [{ index: 1, label: 'x', score: 0.5 }], latencyMs: { preprocess: 1, inference: 1, total: 2 } }));
}
process.stdout.write('queued\\n');
setInterval(() => {}, 60_000); // wait for SIGKILL
`;

beforeAll(async () => {
  // Inside the repository so the child resolves mqtt and pino from its node_modules (tmp/ is git-ignored).
  await mkdir(join(root, 'tmp'), { recursive: true });
  compiled = await mkdtemp(join(root, 'tmp', 'publish-kill-'));
  await promisify(execFile)(
    join(root, 'node_modules/.bin/tsc'),
    [
      '--outDir',
      compiled,
      '--rootDir',
      join(root, 'src'),
      '--module',
      'NodeNext',
      '--moduleResolution',
      'NodeNext',
      '--target',
      'ES2022',
      '--strict',
      '--skipLibCheck',
      '--types',
      'node',
      join(root, 'src/publish/index.ts'),
    ],
    { cwd: root },
  );
  await writeFile(join(compiled, 'child.mjs'), CHILD);
  broker = await startBroker();
});

afterAll(async () => {
  await broker?.stop();
  if (compiled) await rm(compiled, { recursive: true, force: true });
});

describe('publisher killed with SIGKILL during an outage', () => {
  it('loses no Result, keeps their order and continues the seq', async () => {
    const stateDir = await mkdtemp(join(tmpdir(), 'inceptiond-kill-'));
    const deadLink = await startProxy(broker.port);
    deadLink.cut();
    const child = spawn(process.execPath, [join(compiled, 'child.mjs'), stateDir, deadLink.url, '30'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    await new Promise<void>((resolveQueued, reject) => {
      const timer = setTimeout(() => reject(new Error(`child did not queue in time: ${stderr}`)), 30_000);
      child.stdout.on('data', (d: Buffer) => {
        if (d.toString().includes('queued')) {
          clearTimeout(timer);
          resolveQueued();
        }
      });
      child.once('exit', (code) => reject(new Error(`child exited early (${code}): ${stderr}`)));
    });
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    await deadLink.close();

    const outbox = await Outbox.open(join(stateDir, 'outbox'), { maxMessages: 10_000, maxBytes: 1e8, maxAgeSec: 0 }, logger);
    const seq = SeqStore.open(stateDir, outbox, logger);
    expect(outbox.depth).toBe(30);
    const labels = await collect(broker.url, `${BASE}/+/labels`);
    const publisher = new MqttPublisher(
      { url: broker.url, clientId: 'kill-successor', baseTopic: BASE, outbox, qos: 1, statusPayload: () => ({ state: 'online' }) },
      logger,
    );
    await publisher.start();
    await labels.waitFor(() => new Set(labels.json<Result>().map((r) => r.seq)).size >= 30, 20_000);
    expect([...new Set(labels.json<Result>().map((r) => r.seq))]).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    expect(seq.next('camera')).toBe(31);

    await publisher.stop(2_000);
    await labels.close();
    seq.close();
    await outbox.close();
  });
});
