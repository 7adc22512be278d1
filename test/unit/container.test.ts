/**
 * The container files (Dockerfile, .dockerignore, compose.yaml). No container engine here, so the image
 * is not built: this checks what can be checked without one — the files the image copies exist and are
 * not ignored, it runs the systemd unit's ExecStart as a non-root user with the unit's environment and
 * CPU scheduling policy (the entrypoint's script runs here), and
 * compose.yaml parses and mounts what the configuration's defaults expect.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { loadConfig } from '../../src/config/index.js';
import { root } from '../helpers/build.js';
import { schedulingPolicy } from '../../src/ops/index.js';
import { unitEnvironment, unitSchedulingPolicy } from '../helpers/systemd-unit.js';
import { hasChrt, SKIP } from '../helpers/tools.js';

const read = (file: string) => readFileSync(path.join(root, file), 'utf8');

/** Dockerfile instructions: continuation lines joined, comments and parser directives dropped. */
function instructions(text: string): Array<{ op: string; args: string }> {
  const lines = text.split('\n').filter((l) => !/^\s*#/.test(l));
  const joined = lines.join('\n').replace(/\\\n/g, ' ');
  return joined
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => {
      const [op, ...rest] = l.split(/\s+/);
      return { op: op!.toUpperCase(), args: rest.join(' ') };
    });
}

const dockerfile = instructions(read('Dockerfile'));
const all = (op: string) => dockerfile.filter((i) => i.op === op).map((i) => i.args);
const last = (op: string) => all(op).at(-1);
/** The instructions of the last stage (the image itself). */
const finalStage = dockerfile.slice(dockerfile.map((i) => i.op).lastIndexOf('FROM'));
const finalAll = (op: string) => finalStage.filter((i) => i.op === op).map((i) => i.args);

/** The unit's ExecStart split into words, and its Environment= assignments. */
const unit = read('systemd/inceptiond.service');
const execStart = /^ExecStart=(.*)$/m.exec(unit)![1]!.trim().split(/\s+/);
const unitEnv = Object.entries(unitEnvironment());

/**
 * The ENTRYPOINT: a shell script (`sh -c SCRIPT NAME`) that starts the command after it under chrt, and
 * that command (node and the script), to which Docker appends CMD.
 */
const entrypoint = (() => {
  const words = JSON.parse(last('ENTRYPOINT')!) as string[];
  expect(words.slice(0, 2)).toEqual(['/bin/sh', '-c']);
  return { shell: words.slice(0, 4), command: words.slice(4) };
})();

describe('Dockerfile', () => {
  it('builds from node:20-bookworm-slim in two stages, TypeScript in the first', () => {
    const args = Object.fromEntries(
      all('ARG')
        .map((a) => a.split('='))
        .filter((kv) => kv.length === 2),
    );
    const froms = all('FROM').map((f) => f.replace(/\$\{(\w+)\}/g, (_, name: string) => args[name] ?? ''));
    expect(froms).toHaveLength(2);
    for (const from of froms) expect(from).toMatch(/(^|\s)node:20-bookworm-slim(\s|$)/);
    // The JavaScript is built once on the builder's platform; the runtime stage is per target platform.
    expect(froms[0]).toMatch(/--platform=\$BUILDPLATFORM .* AS build$/);
    expect(all('RUN').some((r) => r.includes('npm run build'))).toBe(true);
  });

  it("installs only the runtime dependencies, without ONNX Runtime's install script download", () => {
    const ci = finalAll('RUN').find((r) => r.includes('npm ci'));
    expect(ci).toMatch(/ONNXRUNTIME_NODE_INSTALL=skip npm ci --omit=dev/);
    expect(finalAll('COPY')).toContain('--from=build /src/dist ./dist');
  });

  it('copies files that exist and that .dockerignore lets through', () => {
    const ignored = read('.dockerignore')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    const sources = all('COPY')
      .filter((c) => !c.startsWith('--from='))
      .flatMap((c) => c.split(/\s+/).slice(0, -1));
    expect(sources).toEqual(
      expect.arrayContaining(['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'src', 'config', 'models']),
    );
    for (const source of sources) {
      expect(existsSync(path.join(root, source)), source).toBe(true);
      expect(ignored, `${source} is in .dockerignore`).not.toContain(source);
    }
    // What the daemon reads at run time comes along: the model catalogue, labels, calibration images.
    expect(existsSync(path.join(root, 'models', 'labels'))).toBe(true);
    expect(existsSync(path.join(root, 'models', 'samples'))).toBe(true);
    // What a build must not send: dependencies of the host's architecture, old output, the repository.
    for (const entry of ['node_modules', 'dist', '.git']) expect(ignored).toContain(entry);
  });

  it("runs the unit's ExecStart: the same binary and arguments", () => {
    const cmd = JSON.parse(last('CMD')!) as string[];
    const command = [...entrypoint.command, ...cmd];
    expect(path.basename(command[0]!)).toBe(path.basename(execStart[0]!)); // node
    expect(command.slice(1)).toEqual(execStart.slice(1)); // /opt/inceptiond/dist/cli.js run -c /etc/inceptiond/config.json
    // The script is where the image puts dist/.
    expect(command[1]).toBe(path.posix.join(last('WORKDIR')!, 'dist', 'cli.js'));
    expect(existsSync(path.join(root, 'src', 'cli.ts'))).toBe(true);
  });

  it("starts it under the unit's CPU scheduling policy, and on the default one where the runtime refuses it", (ctx) => {
    ctx.skip(!hasChrt(), SKIP.chrt);
    expect(unitSchedulingPolicy()).toBe('batch');
    // The entrypoint's script, run as the image runs it, on a command that shows its own policy.
    const run = (env: NodeJS.ProcessEnv = process.env) =>
      spawnSync(entrypoint.shell[0]!, [...entrypoint.shell.slice(1), 'cat', '/proc/self/stat'], { encoding: 'utf8', env });
    const started = run();
    expect(started.stderr).toBe('');
    expect(schedulingPolicy(started.stdout)).toBe('batch');
    // A chrt that cannot set the policy (as under a seccomp profile without sched_setscheduler).
    const bin = mkdtempSync(path.join(tmpdir(), 'inceptiond-chrt-'));
    writeFileSync(path.join(bin, 'chrt'), '#!/bin/sh\necho "chrt: failed to set pid 0\'s policy: Operation not permitted" >&2\nexit 1\n', {
      mode: 0o755,
    });
    try {
      const fallback = run({ ...process.env, PATH: `${bin}:${process.env.PATH}` });
      expect(fallback.status).toBe(0);
      expect(schedulingPolicy(fallback.stdout)).toBe(schedulingPolicy());
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });

  it("sets the unit's environment and runs as a non-root user with the state volume", () => {
    const env = finalAll('ENV').join(' ').replaceAll('"', '');
    expect(unitEnv.length).toBeGreaterThan(0);
    for (const [key, value] of unitEnv) expect(env).toContain(`${key}=${value}`);
    // The allocator the unit preloads is installed in the image (ld.so would only complain and go on without it).
    const preload = unitEnvironment().LD_PRELOAD;
    expect(preload).toBe('libjemalloc.so.2');
    const packages = all('ARG').find((a) => a.startsWith('APT_PACKAGES=')) ?? '';
    expect(packages.replace(/^APT_PACKAGES="?|"$/g, '').split(/\s+/)).toContain('libjemalloc2');
    expect(finalAll('RUN').some((r) => r.includes('apt-get install') && /\$\{APT_PACKAGES\}/.test(r))).toBe(true);
    const user = last('USER')!;
    expect(user).not.toMatch(/^(root|0)(:|$)/);
    expect(finalAll('USER')).toHaveLength(1);
    expect(all('RUN').some((r) => r.includes('useradd') && r.includes(user))).toBe(true);
    const { config } = loadConfig({ env: {} });
    expect(all('VOLUME')).toContain(config.stateDir);
    expect(all('EXPOSE')).toContain(String(config.http.port));
  });
});

describe('compose.yaml', () => {
  type Service = {
    build?: unknown;
    image?: string;
    restart?: string;
    devices?: string[];
    group_add?: string[];
    volumes?: string[];
    environment?: Record<string, string>;
  };
  const compose = parse(read('compose.yaml')) as { services: Record<string, Service>; volumes?: Record<string, unknown> };
  const daemon = compose.services.inceptiond!;
  const env = Object.fromEntries(Object.entries(daemon.environment ?? {}).map(([k, v]) => [k, String(v)]));

  it('builds this image and restarts it', () => {
    expect(daemon.build).toBe('.');
    expect(daemon.restart).toMatch(/^(unless-stopped|always|on-failure)/);
  });

  it('mounts what the configuration expects: the camera, the state directory, the configuration file', () => {
    const { config } = loadConfig({ env: {} });
    const targets = (daemon.volumes ?? []).map((v) => v.split(':'));
    // The default camera of the default (webcam) backend, and the group that may open it.
    expect(config.capture.backend).toBe('webcam');
    expect((daemon.devices ?? []).map((d) => d.split(':')[1] ?? d)).toContain(config.capture.webcam.device);
    expect(daemon.group_add).toContain('video');
    // The default stateDir on a named volume, declared at the top level.
    const state = targets.find(([, target]) => target === config.stateDir);
    expect(state, 'a volume on stateDir').toBeDefined();
    expect(compose.volumes).toHaveProperty(state![0]!);
    // The directory of the -c file the entrypoint passes, read-only.
    const configFile = execStart[execStart.indexOf('-c') + 1]!;
    const configMount = targets.find(([, target]) => target === path.posix.dirname(configFile));
    expect(configMount, `a mount on ${path.posix.dirname(configFile)}`).toBeDefined();
    expect(configMount![2]).toBe('ro');
  });

  it('reaches an MQTT broker on the compose network, with variables the configuration accepts', () => {
    const { config } = loadConfig({ env });
    const broker = new URL(config.mqtt.url);
    expect(compose.services).toHaveProperty(broker.hostname);
    expect(config.http.host).toBe('0.0.0.0'); // /metrics and /healthz reachable through the published port
  });
});
