#!/usr/bin/env node
// Runs the real daemon (dist/cli.js run) the way `npm start` does, on free ports and a scratch state
// directory, and reports what a user would measure by hand: time to the first Result, Results/s, CPU
// use and resident memory of the daemon process. Usage:
//   node scripts/measure-daemon.mjs [--seconds 60] [--config config/development.json] [--interval-ms N] [--state DIR]
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '60' },
    config: { type: 'string', default: 'config/development.json' },
    'interval-ms': { type: 'string' },
    state: { type: 'string' },
  },
});
const seconds = Number(values.seconds);
const freePort = () =>
  new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

const mqttPort = await freePort();
const state = values.state ?? (await mkdtemp(path.join(tmpdir(), 'inceptiond-measure-')));
const env = {
  ...process.env,
  INCEPTIOND_STATEDIR: state,
  INCEPTIOND_MQTT_URL: `mqtt://127.0.0.1:${mqttPort}`,
  INCEPTIOND_MQTT_EMBEDDEDBROKER_PORT: String(mqttPort),
  INCEPTIOND_HTTP_PORT: '0',
  ...(values['interval-ms'] ? { INCEPTIOND_CAPTURE_INTERVALMS: values['interval-ms'] } : {}),
};
const started = performance.now();
const child = spawn(process.execPath, ['dist/cli.js', 'run', '-c', values.config], { env, stdio: ['ignore', 'pipe', 'inherit'] });
const ticks = () => {
  const f = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(f[11]) + Number(f[12]); // utime + stime, in clock ticks (100/s on Linux)
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
const counter = async (name) => {
  const text = await (await fetch(`${http}/metrics`)).text();
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`))
    .reduce((n, l) => n + Number(l.split(' ').pop()), 0);
};
const results = () => counter('inceptiond_results_total');
while ((await results()) === 0) await new Promise((r) => setTimeout(r, 20));
const firstResultMs = performance.now() - started;
const n0 = await results();
const f0 = await counter('inceptiond_frames_captured_total');
const g0 = await counter('inceptiond_frames_gated_total');
const c0 = ticks();
const t0 = performance.now();
await new Promise((r) => setTimeout(r, seconds * 1000));
const n1 = await results();
const f1 = await counter('inceptiond_frames_captured_total');
const g1 = await counter('inceptiond_frames_gated_total');
const c1 = ticks();
const wall = (performance.now() - t0) / 1000;
const report = {
  precision,
  firstResultMs: Math.round(firstResultMs),
  resultsPerSec: Number(((n1 - n0) / wall).toFixed(2)),
  frames: f1 - f0,
  gated: g1 - g0,
  cpuPercentOfOneCore: Number((((c1 - c0) / 100 / wall) * 100).toFixed(1)),
  rssMB: Number(status('VmRSS').toFixed(1)),
  peakRssMB: Number(status('VmHWM').toFixed(1)),
  seconds: Number(wall.toFixed(1)),
};
child.kill('SIGTERM');
await new Promise((r) => child.once('exit', r));
console.log(JSON.stringify(report));
