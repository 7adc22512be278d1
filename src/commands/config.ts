// `inceptiond config check|print`: only config/ is loaded, so a check on a board answers at once.
import { Option, type Command } from 'commander';
import { configToJSON, configurationReport, formatOrigins, loadConfig, redactConfig, type LoadedConfig } from '../config/index.js';
import type { CommandContext } from './shared.js';

/**
 * Loads as the daemon does: the file, the settings `set` requests kept in the state directory, the
 * environment. Warnings (deprecated variable names) go to stderr, so stdout stays the command's output.
 */
function load(file: string | undefined, options: { settings: boolean }): LoadedConfig {
  // Given to the loader, so the warnings show even when the configuration is refused.
  return loadConfig({ file, settings: options.settings, onWarning: warn });
}

function warn(message: string): void {
  process.stderr.write(`inceptiond: warning: ${message}\n`);
}

export function register(program: Command, ctx: CommandContext): void {
  const cfg = program.command('config').description('check or print the configuration');
  cfg
    .command('check')
    .description('validate a configuration file, JSON or YAML (exit 78 when invalid)')
    .addOption(ctx.configOption())
    .action((opts: { config?: string }) => {
      load(opts.config, { settings: false });
      process.stdout.write('configuration is valid\n');
    });
  cfg
    .command('print')
    .description('print the effective configuration (the file, the settings kept by set requests, the environment), secrets redacted')
    .addOption(ctx.configOption())
    .addOption(
      new Option(
        '--origin [format]',
        'instead, one "key = value  (origin)" line per key, saying where each value came from: default, file (with line), settings, env (which variable); "json" for a JSON report',
      ).choices(['text', 'json']),
    )
    .action((opts: { config?: string; origin?: true | 'text' | 'json' }) => {
      const loaded = load(opts.config, { settings: true });
      if (opts.origin === undefined) {
        process.stdout.write(`${configToJSON(redactConfig(loaded.config))}\n`);
        return;
      }
      const report = configurationReport(loaded);
      if (opts.origin === 'json') process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      else process.stdout.write(`${formatOrigins(report.values)}\n`);
    });
}
