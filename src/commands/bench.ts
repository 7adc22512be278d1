// `inceptiond bench`: registration only; the measurement is in bench-action.ts.
import type { Command } from 'commander';
import { parsePositiveInt, type CommandContext } from './shared.js';

export function register(program: Command, ctx: CommandContext): void {
  program
    .command('bench')
    .description('session.run rate, CPU-bound ideal rate and whole-pipeline rate, latency percentiles, RSS')
    .addOption(ctx.configOption())
    .option('--seconds <n>', 'seconds of the pipeline; the session loop and the preprocessing take half as long each', parsePositiveInt, 10)
    .option('--rounds <n>', 'turns the three measurements take, so a machine whose speed drifts weighs on each alike', parsePositiveInt, 10)
    .option('--ceiling-only', 'only the CPU-bound ceiling (session loop and preprocessing): no pipeline, no broker')
    .option('--json', 'print one JSON object on one line')
    .option(
      '--images <path>',
      'folder or glob of frames, or "generated" (camera-like 640x480 and 1280x720 JPEGs); default: the files source\'s path, else generated',
    )
    .action(async (opts) => {
      const { benchCommand } = await import('./bench-action.js');
      const config = ctx.loadConfig(opts.config);
      await benchCommand(config, ctx.commandLogger(), {
        seconds: opts.seconds,
        rounds: opts.rounds,
        ceilingOnly: !!opts.ceilingOnly,
        json: !!opts.json,
        images: opts.images,
      });
    });
}
