// `inceptiond config check|print`: only config/ is loaded, so a check on a board answers at once.
import type { Command } from 'commander';
import { configToJSON, redactConfig } from '../config/index.js';
import type { CommandContext } from './shared.js';

export function register(program: Command, ctx: CommandContext): void {
  const cfg = program.command('config').description('check or print the configuration');
  cfg
    .command('check')
    .description('validate a configuration file (exit 78 when invalid)')
    .addOption(ctx.configOption())
    .action((opts) => {
      ctx.loadConfig(opts.config);
      process.stdout.write('configuration is valid\n');
    });
  cfg
    .command('print')
    .description('print the effective configuration, secrets redacted')
    .addOption(ctx.configOption())
    .action((opts) => {
      const config = ctx.loadConfig(opts.config);
      process.stdout.write(`${configToJSON(redactConfig(config))}\n`);
    });
}
