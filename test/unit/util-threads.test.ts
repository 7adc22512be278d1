import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { INFERENCE_THREAD_NAME, ThreadCpuMeter, parseThreadStat, readThreadTimes, type ThreadTimes } from '../../src/util/index.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A stat line as the kernel writes it, fields 3 onward after the name; utime and stime are fields 14 and 15. */
function statLine(tid: number, name: string, utime: number, stime: number): string {
  const after = ['S', '1', '1', '1', '0', '-1', '4194368', '100', '0', '0', '0', String(utime), String(stime), '0', '0', '20', '0', '3'];
  return `${tid} (${name}) ${after.join(' ')}\n`;
}

describe('parseThreadStat', () => {
  it('reads user + system ticks and a name that holds spaces and parentheses', () => {
    expect(parseThreadStat(7, statLine(7, 'libvips worker', 120, 30))).toEqual({ tid: 7, name: 'libvips worker', ticks: 150 });
    expect(parseThreadStat(8, statLine(8, 'a) (b) 1 2', 5, 6))).toEqual({ tid: 8, name: 'a) (b) 1 2', ticks: 11 });
  });

  it('refuses a line it cannot read instead of guessing', () => {
    expect(parseThreadStat(1, 'garbage')).toBeUndefined();
    expect(parseThreadStat(1, '1 (x) S 1 2')).toBeUndefined();
  });
});

describe('readThreadTimes', () => {
  it('reads every thread of a task folder and skips one that vanished', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'inceptiond-task-'));
    dirs.push(dir);
    for (const [tid, name] of [
      [10, 'node'],
      [11, 'inference'],
    ] as const) {
      mkdirSync(path.join(dir, String(tid)));
      writeFileSync(path.join(dir, String(tid), 'stat'), statLine(tid, name, tid, 1));
    }
    mkdirSync(path.join(dir, '12')); // exited between the listing and the read: no stat file
    expect(readThreadTimes(dir)?.sort((a, b) => a.tid - b.tid)).toEqual([
      { tid: 10, name: 'node', ticks: 11 },
      { tid: 11, name: 'inference', ticks: 12 },
    ]);
    expect(readThreadTimes(path.join(dir, 'missing'))).toBeUndefined();
  });

  it('sees this process: the main thread and a worker that named itself', async () => {
    const worker = new Worker(
      `const { readFileSync, writeFileSync } = require('node:fs'); const { parentPort } = require('node:worker_threads');
       writeFileSync('/proc/thread-self/comm', ${JSON.stringify(INFERENCE_THREAD_NAME)});
       // Busy until this thread has used 50 ms of CPU (5 ticks), however loaded the machine is.
       const ticks = () => { const f = readFileSync('/proc/thread-self/stat', 'latin1'); const r = f.slice(f.lastIndexOf(')') + 2).split(' '); return Number(r[11]) + Number(r[12]); };
       while (ticks() < 5);
       // its own thread id: /proc/thread-self links to <pid>/task/<tid>
       parentPort.postMessage(require('node:fs').readlinkSync('/proc/thread-self')); setInterval(() => {}, 1000);`,
      { eval: true },
    );
    try {
      const link = await new Promise<string>((resolve) => worker.once('message', resolve));
      const tid = Number(link.split('/').pop());
      const threads = readThreadTimes() ?? [];
      expect(threads.some((t) => t.tid === process.pid)).toBe(true);
      const named = threads.find((t) => t.tid === tid);
      expect(named).toMatchObject({ name: INFERENCE_THREAD_NAME });
      expect(named!.ticks).toBeGreaterThanOrEqual(5);
      expect(readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim()).toBe(INFERENCE_THREAD_NAME);
    } finally {
      await worker.terminate();
    }
  });
});

describe('ThreadCpuMeter', () => {
  it('adds each thread to its role and never goes down when threads exit or ids are reused', () => {
    let threads: ThreadTimes[] = [
      { tid: 100, name: 'node', ticks: 50 },
      { tid: 101, name: 'inference', ticks: 200 },
      { tid: 102, name: 'inference', ticks: 100 },
      { tid: 103, name: 'libvips worker', ticks: 30 },
    ];
    const meter = new ThreadCpuMeter(() => threads, 100);
    expect(meter.sample()).toEqual({ main: 0.5, inference: 3, other: 0.3 });
    // ORT's pool thread 102 exits (a worker restart); the new worker's thread reuses id 103 and starts low.
    threads = [
      { tid: 100, name: 'node', ticks: 60 },
      { tid: 101, name: 'inference', ticks: 250 },
      { tid: 103, name: 'inference', ticks: 5 },
    ];
    expect(meter.sample()).toEqual({ main: 0.6, inference: 3.55, other: 0.3 });
    threads = [
      { tid: 100, name: 'node', ticks: 60 },
      { tid: 101, name: 'inference', ticks: 250 },
      { tid: 103, name: 'inference', ticks: 25 },
    ];
    expect(meter.sample()).toEqual({ main: 0.6, inference: 3.75, other: 0.3 });
  });

  it('gives nothing where threads cannot be read', () => {
    expect(new ThreadCpuMeter(() => undefined).sample()).toBeUndefined();
  });
});
