#!/usr/bin/env node
// What the durable outbox costs per Result: one source appending Results one after another (as a
// pipeline does: seq.next, append, await), with the outbox off (seq counter only), on with
// fsyncIntervalMs 1000 (the default) and on with 0 (fdatasync per Result); optionally better-sqlite3 in
// WAL mode (synchronous FULL / NORMAL, one transaction per Result) when it is installed under
// tmp/sqlite-bench (`npm install better-sqlite3@12` there; it is not a dependency). Each mode runs in
// its own process; reports Results/s, bytes handed to write(2) per Result (/proc/self/io wchar) and,
// with --strace (strace on PATH), syscalls per Result.
//   node scripts/measure-outbox.mjs [--count 5000] [--rounds 3] [--strace] [--dir tmp/outbox-bench]
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs, promisify } from 'node:util';

const root = path.resolve(import.meta.dirname, '..');
const run = promisify(execFile);
const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '5000' },
    rounds: { type: 'string', default: '3' },
    strace: { type: 'boolean', default: false },
    dir: { type: 'string', default: path.join(root, 'tmp', 'outbox-bench') },
    child: { type: 'string' },
  },
});
const sqlitePath = path.join(root, 'tmp', 'sqlite-bench', 'node_modules', 'better-sqlite3');
// OUTBOX_BENCH_BUILD: measure another build of src/publish (e.g. an older commit compiled with tsc).
const build = process.env.OUTBOX_BENCH_BUILD ?? path.join(root, 'tmp', 'outbox-bench-build');

// A Result as the daemon publishes it (top-5 labels), about 600 bytes of JSON.
const result = (seq) =>
  JSON.stringify({
    seq,
    ts: new Date().toISOString(),
    source: 'camera',
    frame: { capturedAt: new Date().toISOString(), width: 1280, height: 720 },
    model: { name: 'inception-v3', precision: 'int8' },
    provider: 'cpu',
    labels: [0, 1, 2, 3, 4].map((i) => ({ index: 400 + i, label: `label number ${i}, a longer label`, score: 0.5 / (i + 1) })),
    latencyMs: { preprocess: 12.5, inference: 210.25, total: 240.75 },
  });

const wchar = async () => Number(/wchar: (\d+)/.exec(await readFile('/proc/self/io', 'utf8'))[1]);

if (values.child) {
  // One mode, in this process.
  const mode = values.child;
  const count = Number(values.count);
  const dir = path.join(values.dir, `${mode}-${process.pid}`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const quiet = { info() {}, warn() {}, error() {}, debug() {} };
  let append;
  let close = async () => {};
  const { SeqStore } = await import(path.join(build, 'publish', 'seq.js'));
  let seq;
  if (mode === 'off') {
    seq = SeqStore.open(dir, undefined, quiet);
    append = async () => {};
  } else if (mode.startsWith('outbox')) {
    const { Outbox } = await import(path.join(build, 'publish', 'outbox.js'));
    const fsyncIntervalMs = Number(mode.split('-')[1]);
    const outbox = await Outbox.open(path.join(dir, 'outbox'), { maxMessages: 1e6, maxBytes: 1e9, maxAgeSec: 0, fsyncIntervalMs }, quiet);
    seq = SeqStore.open(dir, outbox, quiet);
    append = (payload) => outbox.append({ topic: 'inceptiond/camera/labels', payload, qos: 1 });
    close = () => outbox.close();
  } else {
    const Database = createRequire(import.meta.url)(sqlitePath);
    const db = new Database(path.join(dir, 'outbox.db'));
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${mode === 'sqlite-full' ? 'FULL' : 'NORMAL'}`);
    db.exec('CREATE TABLE outbox (id INTEGER PRIMARY KEY, ts INTEGER, topic TEXT, qos INTEGER, payload BLOB)');
    const insert = db.prepare('INSERT INTO outbox (ts, topic, qos, payload) VALUES (?, ?, ?, ?)');
    seq = SeqStore.open(dir, undefined, quiet);
    append = async (payload) => insert.run(Date.now(), 'inceptiond/camera/labels', 1, payload);
    close = async () => db.close();
  }
  const w0 = await wchar();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < count; i++) await append(result(seq.next('camera')));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const bytes = (await wchar()) - w0;
  await close();
  seq.close();
  await rm(dir, { recursive: true, force: true });
  process.stdout.write(JSON.stringify({ mode, count, resultsPerSec: count / seconds, bytesPerResult: bytes / count }));
  process.exit(0);
}

if (!process.env.OUTBOX_BENCH_BUILD)
  await run(
    path.join(root, 'node_modules/.bin/tsc'),
    [
      ...['--outDir', build, '--rootDir', path.join(root, 'src'), '--module', 'NodeNext', '--moduleResolution', 'NodeNext'],
      ...['--target', 'ES2022', '--strict', '--skipLibCheck', '--types', 'node', path.join(root, 'src/publish/seq.ts')],
    ],
    { cwd: root },
  );
const modes = ['off', 'outbox-1000', 'outbox-0'];
if (existsSync(sqlitePath)) modes.push('sqlite-normal', 'sqlite-full');
const self = path.join(root, 'scripts', 'measure-outbox.mjs');
const results = Object.fromEntries(modes.map((m) => [m, []]));
for (let r = 0; r < Number(values.rounds); r++) {
  for (const mode of modes) {
    const { stdout } = await run(process.execPath, [self, '--child', mode, '--count', values.count, '--dir', values.dir]);
    results[mode].push(JSON.parse(stdout));
  }
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const report = {};
for (const mode of modes) {
  report[mode] = {
    resultsPerSec: Math.round(median(results[mode].map((x) => x.resultsPerSec))),
    bytesPerResult: Math.round(median(results[mode].map((x) => x.bytesPerResult))),
  };
}
if (values.strace) {
  for (const mode of modes) {
    const out = path.join(values.dir, `strace-${mode}.txt`);
    await run('strace', ['-c', '-f', '-o', out, process.execPath, self, '--child', mode, '--count', values.count, '--dir', values.dir]);
    // Columns: % time, seconds, usecs/call, calls, [errors], syscall.
    const calls = new Map();
    for (const line of (await readFile(out, 'utf8')).split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f.length >= 5 && /^\d/.test(f[0])) calls.set(f[f.length - 1], Number(f[3]));
    }
    const per = (name) => Math.round(((calls.get(name) ?? 0) / Number(values.count)) * 100) / 100;
    report[mode].syscallsPerResult = per('total');
    report[mode].perResult = Object.fromEntries(
      ['write', 'pwrite64', 'pread64', 'fdatasync', 'fsync', 'futex', 'epoll_pwait'].map((n) => [n, per(n)]).filter(([, v]) => v > 0),
    );
  }
}
console.log(JSON.stringify({ count: Number(values.count), rounds: Number(values.rounds), report }, null, 2));
