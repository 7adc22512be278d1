/**
 * inference.runtime: the worker loads another onnxruntime-node build instead of the bundled one (for a
 * board: one built with QNN or ACL). Tested with a copy of the stock package in a temporary folder —
 * and, through /proc/self/maps, that the copy's own libonnxruntime.so.1 is the one in the process.
 * Nothing in this file loads the bundled onnxruntime-node, so the check can tell the two apart.
 */
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InferenceEngine, resolveRuntime, RuntimeLoadError, type SessionSettings } from '../../src/inference/index.js';
import { bundledRuntimeProblem } from '../../src/inference/runtime.js';
import { seededInput, testSessionSettings, writeTinyModel } from '../helpers/tiny-model.js';

const logger = pino({ level: 'silent' });
let work: string;
let copy: string;
let modelPath: string;

/** onnxruntime-node (only this platform's binaries) and onnxruntime-common, copied under `root`/node_modules. */
async function copyStockRuntime(root: string): Promise<string> {
  const require = createRequire(import.meta.url);
  const stock = path.dirname(require.resolve('onnxruntime-node/package.json'));
  // onnxruntime-common's exports hide its package.json: find its folder from its main file.
  const commonMain = require.resolve('onnxruntime-common', { paths: [stock] });
  const common = `${commonMain.slice(0, commonMain.lastIndexOf(`${path.sep}node_modules${path.sep}onnxruntime-common${path.sep}`))}${path.sep}node_modules${path.sep}onnxruntime-common`;
  const target = path.join(root, 'node_modules', 'onnxruntime-node');
  await mkdir(target, { recursive: true });
  await cp(path.join(stock, 'package.json'), path.join(target, 'package.json'));
  await cp(path.join(stock, 'dist'), path.join(target, 'dist'), { recursive: true });
  const bin = path.join('bin', 'napi-v6', process.platform, process.arch);
  await cp(path.join(stock, bin), path.join(target, bin), { recursive: true });
  await cp(common, path.join(root, 'node_modules', 'onnxruntime-common'), { recursive: true });
  return target;
}

function settings(over: Partial<SessionSettings> = {}): SessionSettings {
  return testSessionSettings(modelPath, over);
}

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'inceptiond-runtime-'));
  copy = await copyStockRuntime(work);
  modelPath = await writeTinyModel({ size: 8, classes: 10, seed: 3 });
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('inference.runtime', () => {
  it('loads the named build in the worker: its own library is mapped, and it reports its version and providers', async () => {
    const engine = await InferenceEngine.create(settings({ runtime: copy }), logger);
    try {
      expect(engine.info.runtime).toMatchObject({ spec: copy, version: '1.30.0' });
      expect(engine.info.runtime.path.startsWith(copy + path.sep)).toBe(true);
      expect(engine.info.runtime.providers).toContain('cpu');
      const out = await engine.run({ data: seededInput(8), dims: [1, 3, 8, 8] });
      expect(out.scores).toHaveLength(10);
      const maps = await readFile('/proc/self/maps', 'utf8');
      const libs = [
        ...new Set(
          maps
            .split('\n')
            .filter((l) => l.includes('libonnxruntime.so'))
            .map((l) => l.slice(l.indexOf('/'))),
        ),
      ];
      expect(libs).toEqual([path.join(copy, 'bin', 'napi-v6', process.platform, process.arch, 'libonnxruntime.so.1')]);
    } finally {
      await engine.close();
    }
  });

  it('resolves a ./relative folder from the working directory and a package name from node_modules', () => {
    expect(resolveRuntime('./node_modules/onnxruntime-node', work)).toBe(path.join(copy, 'dist', 'index.js'));
    expect(resolveRuntime('onnxruntime-node', work)).toBe(path.join(copy, 'dist', 'index.js'));
  });

  it('says in one line when the bundled build has no binary for the platform (32-bit ARM)', () => {
    expect(bundledRuntimeProblem()).toBeUndefined(); // this machine
    expect(bundledRuntimeProblem('linux', 'arm')).toBe(
      'onnxruntime-node 1.30.0 has no binary for linux-arm (it ships darwin-arm64, linux-arm64, linux-x64, win32-arm64, win32-x64): ' +
        'install the 64-bit (arm64) OS on the board, or build onnxruntime-node for it and name that build in inference.runtime',
    );
  });

  it('names the setting when the build is missing', async () => {
    const err = await InferenceEngine.create(settings({ runtime: path.join(work, 'nope') }), logger).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RuntimeLoadError);
    expect((err as Error).message).toMatch(/^inference\.runtime ".*nope": not found/);
  });

  it('refuses a module that is not an onnxruntime-node build', async () => {
    const fake = path.join(work, 'not-ort');
    await mkdir(fake, { recursive: true });
    await writeFile(path.join(fake, 'package.json'), JSON.stringify({ name: 'not-ort', version: '1.0.0', main: 'index.js' }));
    await writeFile(path.join(fake, 'index.js'), 'module.exports = { hello: 1 };');
    const err = await InferenceEngine.create(settings({ runtime: fake }), logger).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RuntimeLoadError);
    expect((err as Error).message).toMatch(/is not an onnxruntime-node build/);
  });
});
