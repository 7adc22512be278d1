/**
 * Tries an accelerator in a short-lived child process before the worker commits to it, and brings back
 * the reason and the native lines it printed when it fails: so a board without a usable GPU or NPU
 * gets one log line saying why, not a process that WebGPU has marked "no adapter" for good and a
 * stderr full of Vulkan loader text (docs/ARCHITECTURE.md, "Execution providers").
 */
import { fork } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { SessionSettings } from './types.js';

export interface ProbeRequest {
  settings: SessionSettings;
  provider: string;
}

export interface ProbeResult {
  ok: boolean;
  reason?: string;
  /** What the provider's native code wrote to stderr (ANSI colours removed, at most 20 lines). */
  native?: string[];
}

const PROBE_TIMEOUT_MS = 60_000;
const MAX_NATIVE_LINES = 20;
// eslint-disable-next-line no-control-regex
const ANSI = /\u001b\[[0-9;]*m/g;

export function probeProvider(settings: SessionSettings, provider: string, env: NodeJS.ProcessEnv = process.env): Promise<ProbeResult> {
  const { module, execArgv } = childEntry();
  const child = fork(module, [], { env, execArgv, stdio: ['ignore', 'ignore', 'pipe', 'ipc'], serialization: 'advanced' });
  const native: string[] = [];
  let partial = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (text: string) => {
    const lines = (partial + text).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) keep(line);
  });
  const keep = (line: string) => {
    const clean = line.replace(ANSI, '').trimEnd();
    if (clean && native.length < MAX_NATIVE_LINES) native.push(clean);
  };
  return new Promise<ProbeResult>((resolve) => {
    let settled = false;
    const settle = (result: ProbeResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (partial) keep(partial);
      resolve(native.length ? { ...result, native } : result);
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      settle({ ok: false, reason: `no answer within ${PROBE_TIMEOUT_MS / 1000} s while creating a ${provider} session` });
    }, PROBE_TIMEOUT_MS);
    let answer: ProbeResult | undefined;
    child.once('message', (result: ProbeResult) => (answer = result));
    child.once('error', (err) => settle({ ok: false, reason: `cannot start the provider probe: ${err.message}` }));
    // Settle on close (stderr drained), not on the message, so the native lines are all in.
    child.once('close', (code, signal) =>
      settle(
        answer ?? {
          ok: false,
          reason: `the ${provider} probe ended (${signal ?? `exit ${code}`}) without an answer: the provider crashed the process`,
        },
      ),
    );
    child.send({ settings, provider } satisfies ProbeRequest);
  });
}

/** dist/: the compiled child beside this file; src/ (vitest): the .ts through the dev loader. */
function childEntry(): { module: string; execArgv: string[] } {
  const js = fileURLToPath(new URL('./provider-probe-child.js', import.meta.url));
  if (existsSync(js)) return { module: js, execArgv: [] };
  const loader = new URL('./dev-ts-loader.mjs', import.meta.url).href;
  const boot = `import { register } from 'node:module'; register(${JSON.stringify(loader)});`;
  return {
    module: fileURLToPath(new URL('./provider-probe-child.ts', import.meta.url)),
    execArgv: ['--import', `data:text/javascript,${encodeURIComponent(boot)}`],
  };
}
