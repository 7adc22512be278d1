import { describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  ManifestError,
  type ModelManifest,
  findManifestForModel,
  loadLabels,
  loadManifest,
  modelsDir,
  projectRoot,
  resolveModel,
  validateManifest,
  writeManifestBeside,
} from '../../src/model/manifest.js';

function validManifest(): ModelManifest {
  return {
    name: 'tiny',
    file: 'tiny.onnx',
    input: {
      name: 'x',
      layout: 'NCHW',
      width: 8,
      height: 8,
      channels: 'RGB',
      scale: 1 / 255,
      mean: [0.485, 0.456, 0.406],
      std: [0.229, 0.224, 0.225],
      resize: 'crop',
    },
    output: { name: 'y', activation: 'none' },
    labels: 'labels.txt',
  };
}

describe('validateManifest', () => {
  it('accepts a valid manifest', () => {
    expect(validateManifest(validManifest(), 'm.json').name).toBe('tiny');
  });

  it('names the origin, field, value and reason of each problem', () => {
    const m = validManifest() as unknown as { input: Record<string, unknown>; output: Record<string, unknown>; source?: unknown };
    m.input.width = -3;
    m.input.channels = 'GBR';
    m.input.std = [1, 0, 1];
    m.output.activation = 'sigmoid';
    m.source = { url: 'ftp://x', sha256: 'abc', size: 10 };
    let err: Error | undefined;
    try {
      validateManifest(m, 'bad.json');
    } catch (e) {
      err = e as Error;
    }
    expect(err).toBeInstanceOf(ManifestError);
    const msg = err!.message;
    expect(msg).toMatch(/^bad\.json: invalid model manifest/);
    expect(msg).toContain('input.width = -3: must be a positive integer');
    expect(msg).toContain('input.channels = "GBR": must be one of "RGB", "BGR"');
    expect(msg).toContain('input.std = [1,0,1]: must be 3 non-zero numbers');
    expect(msg).toContain('output.activation = "sigmoid"');
    expect(msg).toContain('source.url = "ftp://x"');
    expect(msg).toContain('source.sha256 = "abc": must be 64 hex digits');
    expect(msg).not.toContain('source.size');
  });

  it('reports missing sections and non-objects', () => {
    expect(() => validateManifest({ name: 'x', file: 'x.onnx' }, 'o')).toThrow(/input = undefined: must be an object/);
    expect(() => validateManifest([1, 2], 'o')).toThrow(/o: expected a JSON object/);
  });

  it('checks the shipped inception-v2 manifest', async () => {
    const m = await loadManifest(path.join(modelsDir, 'inception-v2.json'));
    expect(m.input.name).toBe('data_0');
    expect(m.source?.size).toBe(45042799);
    const labels = await loadLabels(m, modelsDir);
    expect(labels).toHaveLength(1000);
    expect(labels![207]).toBe('golden retriever');
  });
});

describe('finding and resolving manifests', () => {
  it('computes the project root from the module location', () => {
    expect(path.join(projectRoot, 'models')).toBe(modelsDir);
    expect(path.basename(path.dirname(modelsDir))).toBe(path.basename(projectRoot));
  });

  it('finds <model>.json beside the model and rebases labels', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'model-manifest-'));
    const sub = path.join(dir, 'out');
    await mkdir(sub);
    await writeFile(path.join(dir, 'labels.txt'), 'cat\ndog\n');
    const modelPath = path.join(sub, 'tiny.built.onnx');
    const written = await writeManifestBeside(modelPath, validManifest(), dir);
    expect(written).toBe(`${modelPath}.json`);
    const json = JSON.parse(await readFile(written, 'utf8'));
    expect(json.file).toBe('tiny.built.onnx');
    expect(json.labels).toBe(path.join('..', 'labels.txt'));

    const r = await resolveModel({ path: modelPath });
    expect(r.manifestPath).toBe(written);
    expect(await loadLabels(r.manifest, path.dirname(r.manifestPath))).toEqual(['cat', 'dog']);
  });

  it('finds a manifest in a search dir whose file matches, and resolves file relative to it', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'model-manifest-'));
    await writeFile(path.join(dir, 'broken.json'), '{not json');
    await writeFile(path.join(dir, 'tiny.json'), JSON.stringify(validManifest()));
    const found = await findManifestForModel(path.join(dir, 'tiny.onnx'), [dir]);
    expect(found?.manifestPath).toBe(path.join(dir, 'tiny.json'));
    expect(await findManifestForModel(path.join(dir, 'other.onnx'), [dir])).toBeUndefined();

    const r = await resolveModel({ manifest: path.join(dir, 'tiny.json') });
    expect(r.modelPath).toBe(path.join(dir, 'tiny.onnx'));
  });

  it('gives clear errors for missing or broken manifests', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'model-manifest-'));
    await expect(resolveModel({ path: path.join(dir, 'none.onnx') })).rejects.toThrow(/no manifest for model .*none\.onnx/);
    await expect(resolveModel({})).rejects.toThrow(/no model given/);
    await writeFile(path.join(dir, 'bad.json'), '{"name": 1');
    await expect(loadManifest(path.join(dir, 'bad.json'))).rejects.toThrow(/bad\.json: not valid JSON/);
    await expect(loadLabels({ ...validManifest(), labels: 'nope.txt' }, dir)).rejects.toThrow(/cannot read labels of model tiny/);
  });
});
