/**
 * Runs the model-setup child process (src/daemon/model-setup-child.ts) the way the daemon does, with
 * its stdout on `logFile`, and returns the file's lines once the child has answered and exited.
 * `journal` sets JOURNAL_STREAM to that file's device:inode, as systemd would.
 */
import { fork } from 'node:child_process';
import { closeSync, fstatSync, openSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import type { Config } from '../../src/config/index.js';
import type { ChildMessage, ChildRequest } from '../../src/daemon/model-setup-child.js';

const childModule = fileURLToPath(new URL('../../src/daemon/model-setup-child.ts', import.meta.url));
const loader = new URL('../../src/inference/dev-ts-loader.mjs', import.meta.url).href;
const boot = `import { register } from 'node:module'; register(${JSON.stringify(loader)});`;

export async function runSetupChild(config: Config, logFile: string, opts: { journal?: boolean } = {}): Promise<string[]> {
  const fd = openSync(logFile, 'w');
  try {
    const st = fstatSync(fd, { bigint: true });
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.JOURNAL_STREAM;
    if (opts.journal) env.JOURNAL_STREAM = `${st.dev}:${st.ino}`;
    const child = fork(childModule, [], {
      serialization: 'advanced',
      stdio: ['ignore', fd, 'inherit', 'ipc'],
      env,
      execArgv: ['--import', `data:text/javascript,${encodeURIComponent(boot)}`],
    });
    const outcome = new Promise<ChildMessage>((resolve, reject) => {
      child.on('message', (m: ChildMessage) => m.kind !== 'status' && resolve(m));
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`child exited (${code}) without an answer`)));
    });
    child.send({ config, level: 'info', logFd: 1 } satisfies ChildRequest);
    expect(await outcome).toMatchObject({ kind: 'done' });
    await new Promise((resolve) => (child.exitCode === null ? child.once('exit', resolve) : resolve(undefined)));
  } finally {
    closeSync(fd);
  }
  return readFileSync(logFile, 'utf8').split('\n').filter(Boolean);
}
