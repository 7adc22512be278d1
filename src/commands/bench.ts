// `inceptiond bench`: registration only; the measurement is in bench-action.ts.
import type { Command } from 'commander';
import { parsePositiveInt, type CommandContext } from './shared.js';

export function register(program: Command, ctx: CommandContext): void {
  program
    .command('bench')
    .description('raw session.run rate vs whole-pipeline rate, latency percentiles, RSS')
    .addOption(ctx.configOption())
    .option('--seconds <n>', 'seconds per measurement', parsePositiveInt, 10)
    .option('--json', 'print JSON')
    .action(async (opts) => {
      const { benchCommand } = await import('./bench-action.js');
      const config = ctx.loadConfig(opts.config);
      await benchCommand(config, ctx.commandLogger(), { seconds: opts.seconds, json: !!opts.json });
    });
}
