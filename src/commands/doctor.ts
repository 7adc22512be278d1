// `inceptiond doctor`: registration only; the checks are in doctor-action.ts.
import type { Command } from 'commander';
import { EXIT } from '../config/index.js';
import type { CommandContext } from './shared.js';

export function register(program: Command, ctx: CommandContext): void {
  program
    .command('doctor')
    .description('check camera, model, execution providers and broker, each with a verdict')
    .addOption(ctx.configOption())
    .option('--json', 'print {"ok", "checks": [{"name", "ok", "detail", "data"?}]}; the inference check\'s data has the node placement')
    .action(async (opts) => {
      const { doctorCommand } = await import('./doctor-action.js');
      const config = ctx.loadConfig(opts.config);
      process.exitCode = (await doctorCommand(config, ctx.commandLogger('error'), { json: !!opts.json })) ? EXIT.OK : EXIT.RUNTIME;
    });
}
