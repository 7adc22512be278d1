#!/usr/bin/env node
// Runs a command line as linux-arm64 under qemu-user, inside a private user + mount namespace (see
// toolchain.mjs): the arm64 node is first on PATH, QEMU_LD_PREFIX and QEMU_CPU are set, and any arm64
// executable started in there (node's own children too) runs through qemu. Nothing changes machine-wide.
//
//   node scripts/arm64/run.mjs [options] -- COMMAND [ARGS...]
//
//   --project      prepare the arm64 copy of this project (npm ci --cpu=arm64, fresh dist/) and run there
//   --cwd DIR      run in DIR (default: the current directory)
//   --info         print the toolchain (paths, versions) as JSON and exit
//   -q, --quiet    say nothing about the toolchain (downloads are still reported)
//
// Example: node scripts/arm64/run.mjs --project -- node dist/cli.js classify --model M.onnx --json IMAGE
// Cache: $INCEPTIOND_ARM64_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/inceptiond-arm64 (delete it to
// fetch everything anew; the project copy is redone by itself when package-lock.json changes).
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Arm64SetupError, defaultCacheDir, explainNamespaceFailure, prepareProject, prepareToolchain, spawnArm64 } from './toolchain.mjs';

function usage(code) {
  process.stderr.write('usage: node scripts/arm64/run.mjs [--project] [--cwd DIR] [--info] [-q] -- COMMAND [ARGS...]\n');
  process.exit(code);
}

export async function main(argv) {
  let project = false;
  let info = false;
  let quiet = false;
  let cwd = process.cwd();
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      i += 1;
      break;
    } else if (a === '--project') project = true;
    else if (a === '--info') info = true;
    else if (a === '-q' || a === '--quiet') quiet = true;
    else if (a === '--cwd') cwd = path.resolve(argv[++i] ?? usage(2));
    else if (a === '-h' || a === '--help') usage(0);
    else if (a.startsWith('-')) usage(2);
    else break;
  }
  const command = argv.slice(i);
  if (!info && command.length === 0) usage(2);

  const cacheDir = defaultCacheDir();
  const log = (msg) => process.stderr.write(`[arm64] ${msg}\n`);
  let tc;
  try {
    tc = await prepareToolchain({ cacheDir, log });
    if (project) cwd = await prepareProject({ cacheDir, log });
  } catch (err) {
    process.stderr.write(`${err instanceof Arm64SetupError ? err.message : err.stack}\n`);
    return 70;
  }
  if (info) {
    process.stdout.write(`${JSON.stringify({ ...tc, ...(project ? { project: cwd } : {}) }, null, 2)}\n`);
    return 0;
  }
  if (!quiet) log(`qemu ${tc.qemuVersion} (${tc.qemuCpu}), node ${tc.nodeVersion} arm64, in ${cwd}`);

  // Signals: from a terminal, Ctrl-C already reaches the whole foreground process group, so SIGINT is
  // not forwarded (the program would see it twice; the daemon takes a second signal as "exit now").
  // Without a terminal the program gets its own process group, so a signal for the group (timeout(1),
  // a CI runner) reaches this process only, and is forwarded once.
  const interactive = Boolean(process.stdin.isTTY);
  const child = spawnArm64(tc, command, { cwd, stdio: ['inherit', 'inherit', 'pipe'], detached: !interactive });
  // stderr passes through; its head is kept to explain a namespace failure.
  let head = '';
  child.stderr.on('data', (d) => {
    if (head.length < 4000) head += d;
    process.stderr.write(d);
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
      if (!(interactive && sig === 'SIGINT')) child.kill(sig);
    });
  }
  return new Promise((resolve) => {
    child.once('error', (err) => {
      process.stderr.write(`arm64 run: ${err.code === 'ENOENT' ? 'unshare (util-linux) is not installed' : err.message}\n`);
      resolve(70);
    });
    child.once('close', (code, signal) => {
      if (code === 211 || code === 212 || /unshare: /.test(head)) {
        process.stderr.write(`arm64 run: ${explainNamespaceFailure({ code, signal, stdout: '', stderr: head })}\n`);
      }
      resolve(code ?? 128 + (os.constants.signals[signal] ?? 15));
    });
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
