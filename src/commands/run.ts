// `inceptiond run`: the daemon in the foreground. SIGTERM/SIGINT (systemd's stop, Ctrl-C) stop it
// cleanly — also during a start that takes minutes (a first-start quantization); SIGHUP
// (`systemctl reload`) re-reads the configuration file.
import type { Command } from 'commander';
import type { Logger } from 'pino';
import { ConfigError, EXIT, type Config } from '../config/index.js';
import type { Daemon } from '../daemon/index.js';
import { createLogger } from '../ops/index.js';
import type { CommandContext } from './shared.js';

export function register(program: Command, ctx: CommandContext): void {
  program
    .command('run')
    .description('run the daemon (SIGTERM/SIGINT stop it, SIGHUP reloads the configuration)')
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

  // Handlers go in before anything slow: Node's default for SIGTERM/SIGHUP is to die at once (and
  // systemd does not restart a process killed by SIGHUP), which a first start that quantizes for
  // minutes would otherwise be exposed to.
  const cancelStart = new AbortController();
  let daemon: Daemon | undefined;
  let stopRequested = false;
  let reloads: Promise<void> = Promise.resolve();
  const onStop = (signal: NodeJS.Signals) => {
    if (stopRequested) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(EXIT.RUNTIME);
    }
    stopRequested = true;
    if (!daemon) {
      logger.info({ signal }, `received ${signal} while starting: cancelling the start`);
      cancelStart.abort();
      return;
    }
    daemon.stop(`received ${signal}`).then(
      () => process.exit(EXIT.OK),
      (err: unknown) => {
        logger.error({ err }, 'error while stopping');
        process.exit(EXIT.RUNTIME);
      },
    );
  };
  const onReload = () => {
    if (!daemon || stopRequested) {
      logger.warn({ signal: 'SIGHUP' }, 'reload requested before the daemon is running: ignored (send it again once it runs)');
      return;
    }
    const running = daemon;
    reloads = reloads.then(() => reload(running, ctx, opts.config, logger));
  };
  process.on('SIGTERM', onStop);
  process.on('SIGINT', onStop);
  process.on('SIGHUP', onReload);

  // Loaded here, not at the top: the other commands and --help never need the daemon's modules.
  const { Daemon: DaemonClass, StartCancelledError } = await import('../daemon/index.js');
  try {
    daemon = await DaemonClass.start(config, logger, { signal: cancelStart.signal });
  } catch (err) {
    if (err instanceof StartCancelledError) {
      logger.info('stopped before the start completed');
      process.exit(EXIT.OK);
    }
    logger.fatal({ err }, `cannot start: ${(err as Error).message}`);
    process.exitCode = err instanceof ConfigError ? EXIT.CONFIG : EXIT.RUNTIME;
    return;
  }
  const info = daemon.info;
  const broker = new URL(info.brokerUrl);
  const watch = `mosquitto_sub -h ${broker.hostname} -p ${broker.port || 1883} -t '${info.baseTopic}/#' -v`;
  logger.info(
    {
      broker: info.brokerUrl,
      baseTopic: info.baseTopic,
      http: info.httpPort ? `http://${config.http.host}:${info.httpPort}` : undefined,
      watch,
    },
    `running: watch the results with: ${watch}`,
  );
}

/** Re-reads the configuration; an invalid file is refused with its reason and the running one stays. */
async function reload(daemon: Daemon, ctx: CommandContext, file: string | undefined, logger: Logger): Promise<void> {
  let next: Config;
  try {
    next = ctx.loadConfig(file);
  } catch (err) {
    const reason = err instanceof ConfigError ? err.message : `cannot read the configuration: ${(err as Error).message}`;
    logger.error({ reason }, `reload refused, the running configuration stays: ${reason}`);
    daemon.reloadRefused(reason);
    return;
  }
  try {
    await daemon.reload(next);
  } catch (err) {
    logger.error({ err }, 'reload failed');
    daemon.reloadRefused((err as Error).message);
  }
}
