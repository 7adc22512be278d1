#!/usr/bin/env node
// Runs the real daemon (dist/cli.js run) the way the systemd unit does, on free ports and a scratch state
// directory, and reports what a user would measure by hand: time to the first Result, Results/s, CPU
// use (in all, and per Result by thread role), the main thread's GC time per Result and resident memory
// of the daemon process. Usage:
//   node scripts/measure-daemon.mjs [--seconds 60 | --frames N [--sample-every 1000]] [--config config/development.json]
//     [--interval-ms N] [--state DIR] [--probe] [--env K=V]... [--node-arg FLAG]... [--broker embedded|mosquitto]
//     [--scheduling other|batch|idle]
// --broker mosquitto starts Mosquitto on the port and turns the daemon's embedded broker off, as on a board
// that publishes to a broker elsewhere (the embedded Aedes broker otherwise runs inside the measured process).
// --frames runs until N Results after the first and samples VmRSS every --sample-every Results: the series
// and its least-squares slope (MB per 1000 Results) show whether memory stays flat. --probe preloads a
// small module into the daemon (main thread only) that reports, at each sample, the main thread's
// process.memoryUsage() and each worker's V8 heap (the inference worker answers a 'heap' message).
// The daemon gets the systemd unit's memory settings (its Environment= lines, NODE_OPTIONS as node flags):
// jemalloc where libjemalloc2 is installed, else glibc's malloc with the MALLOC_* settings; --plain
// leaves them all out. `allocator` in the output is the malloc the daemon ran on (its /proc/PID/maps);
// `--env LD_PRELOAD= --env MALLOC_CONF=` gives `npm start`'s (glibc with the same settings).
// It runs under the unit's CPUSchedulingPolicy= (chrt, util-linux); `--scheduling other` gives
// `npm start`'s. `scheduling` in the output is the policy the daemon ran under.
// --env and --node-arg add process-wide things only the environment can set (MALLOC_*, V8 flags);
// --env K= (empty) removes K.
// --ceiling [--rounds N] takes turns: the daemon runs seconds ÷ N, is paused (an MQTT `pause` request;
// it is quiet once its Results stop), and `inceptiond bench --ceiling-only` measures the CPU-bound ceiling
// on the same config and state directory (same model and frames) for as long, under the unit's settings as
// the bench takes them whatever the daemon's (--scheduling, --plain, --env); then the daemon resumes.
// `efficiency` = the daemon's Results/s over its stretches ÷ the ceiling's idealFps over its own: a ratio
// taken in one run, both sides under the same drift of a shared machine.
// `threads` says where a core's time goes, per thread (the kernel's schedstat): on a CPU, or runnable and
// waiting for one; `machineIdlePercent` is the machine's idle time meanwhile.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { memoryAllocator, schedulingPolicy, serviceUnitSettings, underSchedulingPolicy } from '../dist/ops/index.js';
import { freePort } from '../dist/util/index.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '60' },
    config: { type: 'string', default: 'config/development.json' },
    'interval-ms': { type: 'string' },
    state: { type: 'string' },
    frames: { type: 'string' },
    'sample-every': { type: 'string', default: '1000' },
    probe: { type: 'boolean', default: false },
    plain: { type: 'boolean', default: false },
    env: { type: 'string', multiple: true, default: [] },
    'node-arg': { type: 'string', multiple: true, default: [] },
    broker: { type: 'string', default: 'embedded' },
    ceiling: { type: 'boolean', default: false },
    rounds: { type: 'string', default: '5' },
    scheduling: { type: 'string' },
  },
});
const rounds = values.ceiling ? Number(values.rounds) : 1;
if (!(rounds >= 1 && Number.isInteger(rounds))) throw new Error(`--rounds must be a positive integer, got ${values.rounds}`);
if (values.ceiling && values.frames) throw new Error('--ceiling measures for --seconds, not --frames');
const seconds = Number(values.seconds);
const frames = values.frames ? Number(values.frames) : undefined;
const sampleEvery = Number(values['sample-every']);
const mqttPort = await freePort();
let mosquitto;
if (values.broker === 'mosquitto') {
  // The bench's broker: Mosquitto in its own process (refused here if it is not installed).
  const { startBenchBroker } = await import('../dist/commands/bench-broker.js');
  const { default: pino } = await import('pino');
  mosquitto = await startBenchBroker(mqttPort, pino({ level: 'silent' }));
  if (mosquitto.kind !== 'mosquitto') {
    await mosquitto.close();
    throw new Error('--broker mosquitto: mosquitto is not installed');
  }
} else if (values.broker !== 'embedded') {
  throw new Error(`--broker must be embedded or mosquitto, got ${values.broker}`);
}
const state = values.state ?? (await mkdtemp(path.join(tmpdir(), 'inceptiond-measure-')));
const unit = serviceUnitSettings();
// The unit's CPUSchedulingPolicy=, which chrt sets before it execs node (--scheduling overrides it;
// --plain leaves it out): only the daemon runs under it, not the broker.
const scheduling = values.scheduling ?? (values.plain ? undefined : unit.scheduling);
const { NODE_OPTIONS: unitNodeOptions = '', ...unitMemoryEnv } = unit.env;
const memoryEnv = values.plain ? {} : unitMemoryEnv;
// The daemon bounds its heap growth itself (run.ts); --plain undoes that too (0 = V8's own heuristics).
const memoryArgs = values.plain ? ['--heap-growing-percent=0'] : unitNodeOptions.split(/\s+/).filter(Boolean);
const env = {
  ...process.env,
  ...memoryEnv,
  INCEPTIOND_STATE_DIR: state,
  INCEPTIOND_MQTT_URL: `mqtt://127.0.0.1:${mqttPort}`,
  INCEPTIOND_MQTT_EMBEDDED_BROKER_PORT: String(mqttPort),
  ...(mosquitto ? { INCEPTIOND_MQTT_EMBEDDED_BROKER_ENABLED: 'false' } : {}),
  INCEPTIOND_HTTP_PORT: '0',
  INCEPTIOND_MQTT_BASE_TOPIC: 'measure/daemon',
  ...(values['interval-ms'] ? { INCEPTIOND_CAPTURE_INTERVAL_MS: values['interval-ms'] } : {}),
  ...Object.fromEntries(values.env.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])),
  ...(values.probe ? { INCEPTIOND_MEASURE_PROBE: '1' } : {}),
};
// --env K= (nothing after the =) takes K out of the daemon's environment, e.g. one of the memory settings.
for (const [k, v] of Object.entries(env)) if (v === '') delete env[k];
// Runs in the daemon's main thread before its own code: keeps a handle on every Worker it starts and
// answers 'mem' over the IPC channel (unref'd, so it keeps nothing alive). Children forked later inherit
// the --import but not the variable, so they stay untouched.
const probe = `
import wt from 'node:worker_threads';
import { syncBuiltinESMExports } from 'node:module';
if (wt.isMainThread && process.env.INCEPTIOND_MEASURE_PROBE && process.channel) {
  delete process.env.INCEPTIOND_MEASURE_PROBE;
  const workers = new Set();
  const Base = wt.Worker;
  wt.Worker = class extends Base {
    constructor(...args) {
      super(...args);
      workers.add(this);
      this.once('exit', () => workers.delete(this));
    }
  };
  syncBuiltinESMExports();
  let id = 2 ** 40;
  const heapOf = (w) => new Promise((resolve) => {
    const mine = ++id;
    const timer = setTimeout(() => { w.off('message', on); resolve(null); }, 3000);
    const on = (m) => {
      if (m?.type === 'heap' && m.id === mine) { clearTimeout(timer); w.off('message', on); resolve(m.heap); }
    };
    w.on('message', on);
    w.postMessage({ type: 'heap', id: mine });
  });
  process.on('message', async (m) => {
    if (m !== 'mem') return;
    const heaps = await Promise.all([...workers].map(heapOf));
    process.send({ main: process.memoryUsage(), workers: heaps });
  });
  process.channel.unref();
}`;
/** `inceptiond bench --ceiling-only --json` on this config and state directory, for `seconds`. */
const ceilingRun = (secs) =>
  new Promise((resolve, reject) => {
    const args = ['dist/cli.js', 'bench', '-c', values.config, '--ceiling-only', '--json', '--seconds', String(secs), '--rounds', '2'];
    const b = spawn(process.execPath, args, { env: { ...process.env, INCEPTIOND_STATE_DIR: state }, stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    b.stdout.on('data', (d) => {
      out += d;
    });
    b.once('exit', (code) =>
      code === 0 ? resolve(JSON.parse(out.trim().split('\n').pop())) : reject(new Error(`bench --ceiling-only exited with ${code}`)),
    );
  });
const nodeArgs = [
  ...memoryArgs,
  ...values['node-arg'],
  ...(values.probe ? ['--import', `data:text/javascript,${encodeURIComponent(probe)}`] : []),
];
const started = performance.now();
const daemonCommand = [process.execPath, ...nodeArgs, 'dist/cli.js', 'run', '-c', values.config];
const command = scheduling ? underSchedulingPolicy(scheduling, daemonCommand) : daemonCommand;
const child = spawn(command[0], command.slice(1), {
  env,
  stdio: ['ignore', 'pipe', 'inherit', ...(values.probe ? ['ipc'] : [])],
});
const MB = (b) => Number((b / 2 ** 20).toFixed(1));
const probeNow = () =>
  values.probe
    ? new Promise((resolve) => {
        child.once('message', (m) => {
          const w = m.workers.filter(Boolean);
          resolve({
            main: Object.fromEntries(Object.entries(m.main).map(([k, v]) => [k, MB(v)])),
            workers: w.map((h) => Object.fromEntries(Object.entries(h).map(([k, v]) => [k, MB(v)]))),
          });
        });
        child.send('mem');
      })
    : undefined;
const memNow = async () => ({
  rssMB: Number(status('VmRSS').toFixed(1)),
  anonMB: Number(status('RssAnon').toFixed(1)),
  fileMB: Number(status('RssFile').toFixed(1)),
  ...(values.probe ? { probe: await probeNow() } : {}),
});
const statFields = () => readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1].split(' ');
const ticks = () => {
  const f = statFields();
  return Number(f[11]) + Number(f[12]); // utime + stime, in clock ticks (100/s on Linux)
};
/** Minor page faults so far: each costs the kernel a fresh zeroed page (microseconds in a VM). */
const minorFaults = () => Number(statFields()[7]);
/** The machine's idle time and all CPU time so far, in clock ticks (/proc/stat's first line: idle + iowait). */
const machineTicks = () => {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return { idle: f[3] + f[4], all: f.reduce((a, b) => a + b, 0) };
};
/**
 * Each thread of the daemon now: its name, ns on a CPU, ns runnable but waiting for one (the kernel's
 * schedstat), and context switches it made (blocking) and suffered (preempted).
 */
const threadSched = () => {
  const threads = new Map();
  for (const tid of readdirSync(`/proc/${child.pid}/task`)) {
    try {
      const dir = `/proc/${child.pid}/task/${tid}`;
      const [onCpu, waiting] = readFileSync(`${dir}/schedstat`, 'utf8').split(' ').map(Number);
      const st = readFileSync(`${dir}/status`, 'utf8');
      const switches = (k) => Number(st.match(new RegExp(`^${k}_ctxt_switches:\\s+(\\d+)`, 'm'))[1]);
      const name = Number(tid) === child.pid ? 'main' : readFileSync(`${dir}/comm`, 'utf8').trim();
      threads.set(tid, { name, onCpu, waiting, voluntary: switches('voluntary'), involuntary: switches('nonvoluntary') });
    } catch {
      // the thread ended meanwhile
    }
  }
  return threads;
};
const status = (key) => Number(readFileSync(`/proc/${child.pid}/status`, 'utf8').match(new RegExp(`${key}:\\s+(\\d+)`))[1]) / 1024;

let http;
let precision;
const ready = new Promise((resolve, reject) => {
  child.once('exit', (code) => reject(new Error(`daemon exited with ${code}`)));
  createInterface({ input: child.stdout }).on('line', (line) => {
    let l;
    try {
      l = JSON.parse(line);
    } catch {
      return;
    }
    if (l.precision) precision = l.precision;
    if (l.http) {
      http = l.http;
      resolve();
    }
  });
});
await ready;
const metricsText = async () => (await fetch(`${http}/metrics`)).text();
/** The sum of the samples whose line starts with `prefix` (a metric's name and `{`, or more labels), from one /metrics text. */
const sumOf = (text, prefix) =>
  text
    .split('\n')
    .filter((l) => l.startsWith(prefix))
    .reduce((n, l) => n + Number(l.split(' ').pop()), 0);
const results = async () => sumOf(await metricsText(), 'inceptiond_results_total{');
// The daemon's CPU by thread role (its /metrics: main, inference, other) and the main thread's time in V8's
// garbage collector by kind (prom-client's default metrics), in seconds.
const ROLES = ['main', 'inference', 'other'];
const GC_KINDS = ['minor', 'major', 'incremental', 'weakcb'];
while ((await results()) === 0) await new Promise((r) => setTimeout(r, 20));
const firstResultMs = performance.now() - started;
/** The daemon's counters now: for the difference over a stretch. */
const counters = async () => {
  // One scrape: every figure of a snapshot from the same moment.
  const text = await metricsText();
  return {
    results: sumOf(text, 'inceptiond_results_total{'),
    frames: sumOf(text, 'inceptiond_frames_captured_total{'),
    gated: sumOf(text, 'inceptiond_frames_gated_total{'),
    latencySum: sumOf(text, 'inceptiond_frame_latency_seconds_sum'),
    latencyCount: sumOf(text, 'inceptiond_frame_latency_seconds_count'),
    ticks: ticks(),
    machine: machineTicks(),
    sched: threadSched(),
    faults: minorFaults(),
    threads: Object.fromEntries(ROLES.map((role) => [role, sumOf(text, `inceptiond_thread_cpu_seconds_total{thread="${role}"`)])),
    gc: Object.fromEntries(GC_KINDS.map((kind) => [kind, sumOf(text, `nodejs_gc_duration_seconds_sum{kind="${kind}"`)])),
    at: performance.now(),
  };
};
const total = {
  results: 0,
  frames: 0,
  gated: 0,
  latencySum: 0,
  latencyCount: 0,
  ticks: 0,
  faults: 0,
  wallMs: 0,
  threads: Object.fromEntries(ROLES.map((r) => [r, 0])),
  gc: Object.fromEntries(GC_KINDS.map((k) => [k, 0])),
  machineIdle: 0,
  machineAll: 0,
  sched: new Map(),
};
const add = (a, b) => {
  for (const k of ['results', 'frames', 'gated', 'latencySum', 'latencyCount', 'ticks', 'faults']) total[k] += b[k] - a[k];
  total.wallMs += b.at - a.at;
  for (const role of Object.keys(total.threads)) total.threads[role] += b.threads[role] - a.threads[role];
  for (const kind of GC_KINDS) total.gc[kind] += b.gc[kind] - a.gc[kind];
  total.machineIdle += b.machine.idle - a.machine.idle;
  total.machineAll += b.machine.all - a.machine.all;
  for (const [tid, y] of b.sched) {
    const x = a.sched.get(tid) ?? { onCpu: 0, waiting: 0, voluntary: 0, involuntary: 0 };
    const t = total.sched.get(tid) ?? { name: y.name, onCpu: 0, waiting: 0, voluntary: 0, involuntary: 0 };
    for (const k of ['onCpu', 'waiting', 'voluntary', 'involuntary']) t[k] += y[k] - x[k];
    total.sched.set(tid, t);
  }
};
// --ceiling: the daemon is paused and resumed by MQTT requests, as a user would.
const control = values.ceiling ? await (await import('mqtt')).default.connectAsync(`mqtt://127.0.0.1:${mqttPort}`) : undefined;
const ask = async (op) => {
  const answered = new Promise((resolve) => control.once('message', (_topic, payload) => resolve(JSON.parse(String(payload)))));
  await control.subscribeAsync(`measure/daemon/response/${op}`);
  await control.publishAsync(`measure/daemon/request/${op}`, '{}');
  const answer = await answered;
  await control.unsubscribeAsync(`measure/daemon/response/${op}`);
  if (answer.status !== 'ok') throw new Error(`${op}: ${answer.error}`);
};
/** Resolves once the Results counter holds still for 100 ms: the frames in flight when paused are done. */
const quiet = async () => {
  for (let last = await results(); ; ) {
    await new Promise((r) => setTimeout(r, 100));
    const now = await results();
    if (now === last) return;
    last = now;
  }
};
const ceilings = [];
let start;
const series = [];
for (let round = 0; round < rounds; round++) {
  if (round > 0) {
    await ask('resume');
    const before = await results();
    while ((await results()) === before) await new Promise((r) => setTimeout(r, 20));
  }
  const a = await counters();
  if (round === 0) start = await memNow();
  if (frames) {
    // Poll often enough to sample close to each multiple of sampleEvery, rarely enough to cost nothing.
    let next = sampleEvery;
    for (;;) {
      const n = (await results()) - a.results;
      if (n >= next) {
        series.push({ results: n, ...(await memNow()) });
        next += sampleEvery;
      }
      if (n >= frames) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  } else {
    await new Promise((r) => setTimeout(r, (seconds * 1000) / rounds));
  }
  add(a, await counters());
  if (values.ceiling) {
    await ask('pause');
    await quiet();
    ceilings.push(await ceilingRun(Math.max(1, Math.round(seconds / rounds))));
  }
}
const end = await memNow();
const wall = total.wallMs / 1000;
const n = total.results;
const report = {
  precision,
  firstResultMs: Math.round(firstResultMs),
  resultsPerSec: Number((n / wall).toFixed(2)),
  frames: total.frames,
  gated: total.gated,
  // A frame's mean age at its Result (capture → Result, the daemon's inceptiond_frame_latency_seconds)
  frameLatencyMs: Number(((total.latencySum * 1000) / total.latencyCount).toFixed(1)),
  cpuPercentOfOneCore: Number(((total.ticks / 100 / wall) * 100).toFixed(1)),
  // CPU ms per Result: the whole process, and by thread role
  cpuMsPerResult: {
    total: Number(((total.ticks * 10) / n).toFixed(2)),
    ...Object.fromEntries(Object.entries(total.threads).map(([role, secs]) => [role, Number(((secs * 1000) / n).toFixed(2))])),
  },
  // Wall ms per Result the main thread spent in the garbage collector (its pauses; helper threads' share not included)
  gcMsPerResult: Object.fromEntries(GC_KINDS.map((k) => [k, Number(((total.gc[k] * 1000) / n).toFixed(3))])),
  // The whole machine's idle share over the daemon's stretches (the broker and this script run too)
  machineIdlePercent: Number(((total.machineIdle / total.machineAll) * 100).toFixed(1)),
  // Each thread busier than 1 % of a core, by thread id: % of the wall time on a CPU and runnable but
  // waiting for one, and context switches per Result it made (blocking) and suffered (preempted)
  threads: [...total.sched]
    .filter(([, t]) => t.onCpu / 1e6 / total.wallMs >= 0.01)
    .sort(([a], [b]) => Number(a) - Number(b))
    .map(([tid, t]) => ({
      thread: t.name,
      tid: Number(tid),
      onCpuPercent: Number((t.onCpu / 1e4 / total.wallMs).toFixed(1)),
      waitingPercent: Number((t.waiting / 1e4 / total.wallMs).toFixed(1)),
      blockedPerResult: Number((t.voluntary / n).toFixed(1)),
      preemptedPerResult: Number((t.involuntary / n).toFixed(1)),
    })),
  pageFaultsPerResult: Number((total.faults / n).toFixed(1)),
  rssMB: end.rssMB,
  peakRssMB: Number(status('VmHWM').toFixed(1)),
  allocator: memoryAllocator(env, readFileSync(`/proc/${child.pid}/maps`, 'utf8')).name,
  scheduling: schedulingPolicy(readFileSync(`/proc/${child.pid}/stat`, 'utf8')),
  seconds: Number(wall.toFixed(1)),
  start,
  end,
  ...(frames ? { series, slopeMBPer1000: slope(series.map((p) => [p.results / 1000, p.rssMB])) } : {}),
};
if (values.ceiling) {
  // Each ceiling run is as long as the stretch before it: the mean of their CPU per frame is the ceiling's.
  const mean = (f) => ceilings.reduce((a, c) => a + f(c), 0) / ceilings.length;
  const inference = mean((c) => c.cpuMsPerFrame.inference);
  const preprocess = mean((c) => c.cpuMsPerFrame.preprocess);
  const idealFps = (ceilings[0].cores * 1000) / (inference + preprocess);
  report.ceiling = {
    rounds,
    idealFps: Number(idealFps.toFixed(2)),
    cpuMsPerFrame: { inference: Number(inference.toFixed(2)), preprocess: Number(preprocess.toFixed(2)) },
    idealFpsByRound: ceilings.map((c) => c.idealFps),
    images: ceilings[0].images,
  };
  report.efficiency = Number((report.resultsPerSec / idealFps).toFixed(3));
  await control.endAsync();
}
child.kill('SIGTERM');
await new Promise((r) => child.once('exit', r));
await mosquitto?.close();
console.log(JSON.stringify(report));

/** Least-squares slope of [x, y] points (NaN for fewer than two). */
function slope(points) {
  const n = points.length;
  if (n < 2) return Number.NaN;
  const mx = points.reduce((a, [x]) => a + x, 0) / n;
  const my = points.reduce((a, [, y]) => a + y, 0) / n;
  const sxy = points.reduce((a, [x, y]) => a + (x - mx) * (y - my), 0);
  const sxx = points.reduce((a, [x]) => a + (x - mx) ** 2, 0);
  return Number((sxy / sxx).toFixed(3));
}
