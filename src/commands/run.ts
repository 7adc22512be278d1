// `inceptiond run`: the daemon in the foreground until SIGTERM/SIGINT (systemd's stop, Ctrl-C).
import type { Command } from 'commander';
import { ConfigError, EXIT } from '../config/index.js';
import { createLogger } from '../ops/index.js';
import type { CommandContext } from './shared.js';

export function register(program: Command, ctx: CommandContext): void {
  program
    .command('run')
    .description('run the daemon')
    .addOption(ctx.configOption())
    .action((opts: { config?: string }) => runDaemon(ctx, opts));
}

async function runDaemon(ctx: CommandContext, opts: { config?: string }): Promise<void> {
  const config = ctx.loadConfig(opts.config);
  const logger = createLogger({ level: config.log.level, name: 'inceptiond' });
  process.on('unhandledRejection', (err) => {
    logger.fatal({ err }, 'unhandled promise rejection: exiting so the supervisor restarts a clean process');
    process.exit(EXIT.RUNTIME);
  });
  process.on('uncaughtException', (err) => {
    logger.fatal({ err }, 'uncaught exception: exiting so the supervisor restarts a clean process');
    process.exit(EXIT.RUNTIME);
  });
  // Loaded here, not at the top: the other commands and --help never need the daemon's modules.
  const { Daemon } = await import('../daemon/index.js');
  let daemon: Awaited<ReturnType<typeof Daemon.start>>;
  try {
    daemon = await Daemon.start(config, logger);
  } catch (err) {
    logger.fatal({ err }, `cannot start: ${(err as Error).message}`);
    process.exitCode = err instanceof ConfigError ? EXIT.CONFIG : EXIT.RUNTIME;
    return;
  }
  const info = daemon.info;
  const broker = new URL(info.brokerUrl);
  logger.info(
    {
      broker: info.brokerUrl,
      baseTopic: info.baseTopic,
      http: info.httpPort ? `http://${config.http.host}:${info.httpPort}` : undefined,
      watch: `mosquitto_sub -h ${broker.hostname} -p ${broker.port || 1883} -t '${info.baseTopic}/#' -v`,
    },
    `running: watch the results with: mosquitto_sub -h ${broker.hostname} -p ${broker.port || 1883} -t '${info.baseTopic}/#' -v`,
  );
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(EXIT.RUNTIME);
    }
    daemon.stop(`received ${signal}`).then(
      () => process.exit(EXIT.OK),
      (err: unknown) => {
        logger.error({ err }, 'error while stopping');
        process.exit(EXIT.RUNTIME);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}
