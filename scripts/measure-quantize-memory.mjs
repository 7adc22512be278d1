#!/usr/bin/env node
// Peak resident memory (VmHWM, from process.resourceUsage().maxRSS at exit) of on-device quantization:
//   node scripts/measure-quantize-memory.mjs cli   [--model tmp/q/ib.onnx] [--calibration models/samples] [--method percentile]
//   node scripts/measure-quantize-memory.mjs start [--calibration models/samples]
// `cli` runs `inceptiond model quantize MODEL OUT --calibration DIR` (building MODEL first with `model build`
// when it is missing) and reports the command's peak and wall time. `start` runs a daemon first start
// (`inceptiond run`, config/development.json, a scratch state directory, the files source on DIR, free
// ports) until the model-setup child has exited, and reports the child's peak and the quantization time
// the daemon logs; then stops the daemon. Both preload a module (inherited by forked children) that
// appends `pid script maxRSS` to a file when a process exits. Needs `npm run build` first.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { freePort } from '../dist/util/index.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    model: { type: 'string', default: 'tmp/q/ib.onnx' },
    calibration: { type: 'string', default: 'models/samples' },
    method: { type: 'string', default: 'percentile' },
  },
});
const mode = positionals[0] ?? 'cli';
const scratch = await mkdtemp(path.join(tmpdir(), 'inceptiond-qmem-'));
const peaks = path.join(scratch, 'peaks.txt');
const hook = path.join(scratch, 'hook.mjs');
await writeFile(
  hook,
  `import { appendFileSync } from 'node:fs';
process.on('exit', () => {
  try { appendFileSync(${JSON.stringify(peaks)}, process.pid + ' ' + (process.argv[1] ?? '-') + ' ' + process.resourceUsage().maxRSS + '\\n'); } catch {}
});
`,
);
const nodeArgs = ['--import', hook];
const readPeaks = () =>
  existsSync(peaks)
    ? readFileSync(peaks, 'utf8')
        .trim()
        .split('\n')
        .map((l) => l.split(' '))
        .map(([pid, script, kb]) => ({ pid: Number(pid), script, mb: Number(kb) / 1024 }))
    : [];

try {
  if (mode === 'cli') {
    if (!existsSync(values.model)) {
      await mkdir(path.dirname(values.model), { recursive: true });
      spawnSync(process.execPath, ['dist/cli.js', 'model', 'build', '--out', values.model], { stdio: 'inherit' });
    }
    const out = path.join(scratch, 'out.int8.onnx');
    const t0 = performance.now();
    const r = spawnSync(
      process.execPath,
      [
        ...nodeArgs,
        'dist/cli.js',
        'model',
        'quantize',
        values.model,
        out,
        '--calibration',
        values.calibration,
        '--method',
        values.method,
        '--json',
      ],
      { stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 << 20 },
    );
    const seconds = (performance.now() - t0) / 1000;
    if (r.status !== 0) throw new Error(`model quantize exited ${r.status}`);
    const report = JSON.parse(r.stdout.toString());
    const peak = readPeaks().find((p) => p.script.endsWith('cli.js'));
    console.log(
      `model quantize ${values.model} (${report.calibrationImages} images, ${values.method}): peak ${peak?.mb.toFixed(0)} MB, ` +
        `${seconds.toFixed(2)} s wall, worst layer ${report.worstLayers[0]?.sqnrDb.toFixed(1)} dB`,
    );
  } else if (mode === 'start') {
    const mqttPort = await freePort();
    const env = {
      ...process.env,
      INCEPTIOND_STATE_DIR: path.join(scratch, 'state'),
      INCEPTIOND_MQTT_URL: `mqtt://127.0.0.1:${mqttPort}`,
      INCEPTIOND_MQTT_EMBEDDED_BROKER_PORT: String(mqttPort),
      INCEPTIOND_HTTP_PORT: '0',
      INCEPTIOND_CAPTURE_FILES_PATH: values.calibration,
    };
    const t0 = performance.now();
    const daemon = spawn(process.execPath, [...nodeArgs, 'dist/cli.js', 'run', '-c', 'config/development.json'], {
      env,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let quantizeMs;
    let mainDuringSetup = 0;
    let childExited;
    const done = new Promise((resolve, reject) => {
      daemon.once('exit', (code) => reject(new Error(`daemon exited (${code}) before its model was ready`)));
      createInterface({ input: daemon.stdout }).on('line', (line) => {
        let rec;
        try {
          rec = JSON.parse(line);
        } catch {
          return;
        }
        if (typeof rec.msg === 'string' && rec.msg.startsWith('INT8 model ready')) quantizeMs = rec.durationMs;
        if (childExited === undefined && readPeaks().some((p) => p.script.endsWith('model-setup-child.js'))) {
          childExited = performance.now();
          resolve();
        }
      });
      const poll = setInterval(() => {
        try {
          const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${daemon.pid}/status`, 'utf8'))?.[1]);
          if (childExited === undefined && kb > mainDuringSetup) mainDuringSetup = kb;
        } catch {}
        if (readPeaks().some((p) => p.script.endsWith('model-setup-child.js'))) {
          clearInterval(poll);
          childExited ??= performance.now();
          resolve();
        }
      }, 100);
      daemon.once('exit', () => clearInterval(poll));
    });
    await done;
    daemon.removeAllListeners('exit');
    daemon.kill('SIGTERM');
    await new Promise((resolve) => daemon.once('exit', resolve));
    const child = readPeaks().find((p) => p.script.endsWith('model-setup-child.js'));
    const main = readPeaks().find((p) => p.pid === daemon.pid);
    console.log(
      `first start: model-setup child peak ${child?.mb.toFixed(0)} MB; build + quantization ${((childExited - t0) / 1000).toFixed(1)} s ` +
        `after start (quantization ${quantizeMs !== undefined ? (quantizeMs / 1000).toFixed(1) : '?'} s); daemon main process ` +
        `${(mainDuringSetup / 1024).toFixed(0)} MB while the child ran, peak ${main?.mb.toFixed(0)} MB`,
    );
  } else {
    throw new Error(`unknown mode ${mode} (cli or start)`);
  }
} finally {
  await rm(scratch, { recursive: true, force: true });
}
