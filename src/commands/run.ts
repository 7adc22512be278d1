// `inceptiond run`: the daemon in the foreground. SIGTERM/SIGINT (systemd's stop, Ctrl-C) stop it
// cleanly — also during a start that takes minutes (a first-start quantization); SIGHUP
// (`systemctl reload`) re-reads the configuration file.
import type { Command } from 'commander';
import { ConfigError, EXIT } from '../config/index.js';
import type { Daemon } from '../daemon/index.js';
import { createLogger, describeAllocator, memoryAllocator, preloadFailure, schedulingPolicy } from '../ops/index.js';
import { applyDaemonV8Flags } from './daemon-v8-flags.js';
import type { CommandContext } from './shared.js';

export function register(program: Command, ctx: CommandContext): void {
  program
    .command('run')
    .description('run the daemon (SIGTERM/SIGINT stop it, SIGHUP reloads the configuration)')
    .addOption(ctx.configOption())
    .action((opts: { config?: string }) => runDaemon(ctx, opts));
}

async function runDaemon(ctx: CommandContext, opts: { config?: string }): Promise<void> {
  applyDaemonV8Flags();
  let config = ctx.loadConfig(opts.config);
  // stdout: the journal under systemd (each line with its priority), readable lines on a terminal.
  const logger = createLogger({ level: config.log.level, name: 'inceptiond', format: config.log.format });
  for (const warning of ctx.takeConfigWarnings()) logger.warn(warning);
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
    // Refusals are logged and shown on the status by the daemon.
    daemon.reloadFromSource().catch(() => undefined);
  };
  process.on('SIGTERM', onStop);
  process.on('SIGINT', onStop);
  process.on('SIGHUP', onReload);

  // Loaded here, not at the top: the other commands and --help never need the daemon's modules.
  const { Daemon: DaemonClass, StartCancelledError, readSettings, SETTINGS_FILE } = await import('../daemon/index.js');
  let settings: Record<string, unknown> | undefined;
  try {
    // Values kept by `set` requests go over the file (the environment still wins).
    settings = await readSettings(config.stateDir);
    if (settings) {
      config = ctx.loadConfig(opts.config, settings);
      logger.info({ settings }, `applying the settings kept by set requests in ${config.stateDir}/${SETTINGS_FILE}`);
    }
  } catch (err) {
    const message =
      err instanceof ConfigError
        ? `${err.message}\n(from the settings kept by set requests in ${config.stateDir}/${SETTINGS_FILE}: fix or delete it)`
        : (err as Error).message;
    logger.fatal({ err }, `cannot start: ${message}`);
    process.exitCode = err instanceof ConfigError ? EXIT.CONFIG : EXIT.RUNTIME;
    return;
  }
  try {
    daemon = await DaemonClass.start(config, logger, {
      signal: cancelStart.signal,
      configSource: { load: (overlay) => ctx.loadConfig(opts.config, overlay), overlay: settings },
    });
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
  const allocator = memoryAllocator();
  const failure = preloadFailure(allocator);
  if (failure) {
    logger.warn(
      { notLoaded: allocator.notLoaded, allocator: allocator.name },
      `${failure}: slower for the same memory (README "The memory allocator")`,
    );
  }
  logger.info(
    {
      allocator: describeAllocator(allocator),
      scheduling: schedulingPolicy(),
      broker: info.brokerUrl,
      baseTopic: info.baseTopic,
      http: info.httpPort ? `http://${config.http.host}:${info.httpPort}` : undefined,
      watch,
    },
    `running: watch the results with: ${watch}`,
  );
}
