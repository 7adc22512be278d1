// Module hooks that let the inference worker run from the TypeScript sources (under vitest, where
// dist/ may be stale or absent). The built daemon never uses this: dist/inference/worker.js exists.
// Needs the `typescript` dev dependency.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

let ts;

export async function resolve(specifier, context, next) {
  // NodeNext sources import './x.js' where only './x.ts' exists.
  if (context.parentURL?.endsWith('.ts') && specifier.startsWith('.') && specifier.endsWith('.js')) {
    const js = new URL(specifier, context.parentURL);
    const tsUrl = new URL(`${specifier.slice(0, -3)}.ts`, context.parentURL);
    if (!existsSync(fileURLToPath(js)) && existsSync(fileURLToPath(tsUrl))) {
      return { url: tsUrl.href, format: 'module', shortCircuit: true };
    }
  }
  return next(specifier, context);
}

export async function load(url, context, next) {
  if (!url.startsWith('file:') || !url.endsWith('.ts')) return next(url, context);
  ts ??= (await import('typescript')).default;
  const fileName = fileURLToPath(url);
  const { outputText } = ts.transpileModule(await readFile(fileName, 'utf8'), {
    fileName,
    compilerOptions: {
      module: ts.ModuleKind.ESNext,
      target: ts.ScriptTarget.ES2022,
      inlineSourceMap: true,
      inlineSources: true,
    },
  });
  return { format: 'module', source: outputText, shortCircuit: true };
}
