/**
 * A vitest reporter that ends the run with what was NOT tested and why: every test skipped with a note
 * (ctx.skip(cond, SKIP.…)), grouped by note. Used beside the default reporter (vitest.config.ts, .ci/run).
 */
import type { Reporter, TestModule } from 'vitest/node';

export default class SkipReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    const byNote = new Map<string, string[]>();
    for (const module of testModules) {
      for (const test of module.children.allTests()) {
        const result = test.result();
        if (result.state !== 'skipped' || !result.note) continue;
        const list = byNote.get(result.note) ?? [];
        list.push(`${module.moduleId.replace(`${process.cwd()}/`, '')} > ${test.fullName}`);
        byNote.set(result.note, list);
      }
    }
    if (byNote.size === 0) return;
    const total = [...byNote.values()].reduce((n, l) => n + l.length, 0);
    const lines = [`\nskipped ${total} test${total === 1 ? '' : 's'} for missing tools:`];
    for (const [note, tests] of byNote) {
      lines.push(`  ${note}:`);
      for (const t of tests) lines.push(`    - ${t}`);
    }
    process.stdout.write(`${lines.join('\n')}\n`);
  }
}
