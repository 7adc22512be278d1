// `inceptiond doctor`: registration only; the checks are in doctor-action.ts.
import type { Command } from 'commander';
import { configurationReport, EXIT, loadConfig } from '../config/index.js';
import type { CommandContext } from './shared.js';

export function register(program: Command, ctx: CommandContext): void {
  program
    .command('doctor')
    .description(
      'show the configuration values that are not defaults and where each comes from, then check camera, model, execution providers and broker, each with a verdict',
    )
    .addOption(ctx.configOption())
    .option(
      '--json',
      'print {"ok", "configuration": {"file", "values": [{"key", "value", "origin", "from"}], "warnings"}, "checks": [{"name", "ok", "detail", "data"?}]}; the inference check\'s data has the node placement',
    )
    .action(async (opts: { config?: string; json?: boolean }) => {
      const { doctorCommand } = await import('./doctor-action.js');
      // As the daemon loads it: the file, the settings kept by set requests, the environment.
      const loaded = loadConfig({ file: opts.config, settings: true });
      const configuration = configurationReport(loaded, 'changed');
      process.exitCode = (await doctorCommand(loaded.config, ctx.commandLogger('error'), { json: !!opts.json, configuration }))
        ? EXIT.OK
        : EXIT.RUNTIME;
    });
}
