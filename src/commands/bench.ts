// `inceptiond bench`: registration, and the re-run under the systemd unit's process settings; the
// measurement is in bench-action.ts.
import { spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import type { Command } from 'commander';
import type { Logger } from 'pino';
import { canStartUnder, schedulingPolicy, serviceUnitSettings, underSchedulingPolicy, type ServiceUnitSettings } from '../ops/index.js';
import { parsePositiveInt, type CommandContext } from './shared.js';

const AS_STARTED = '--no-unit-settings';

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
    .option(
      AS_STARTED,
      "measure in this process as started, not under the systemd unit's environment (allocator, NODE_OPTIONS) and CPU scheduling policy",
    )
    .action(async (opts) => {
      const config = ctx.loadConfig(opts.config);
      const logger = ctx.commandLogger();
      if (opts.unitSettings && process.platform === 'linux') {
        const code = await rerunUnderUnitSettings(logger);
        if (code !== undefined) {
          process.exitCode = code;
          return;
        }
      }
      const { benchCommand } = await import('./bench-action.js');
      await benchCommand(config, logger, {
        seconds: opts.seconds,
        rounds: opts.rounds,
        ceilingOnly: !!opts.ceilingOnly,
        json: !!opts.json,
        images: opts.images,
      });
    });
}

/**
 * Runs this same bench command again in a child process started as the unit starts the daemon: with the
 * unit's Environment= (jemalloc preloaded, its settings, NODE_OPTIONS) and under its CPUSchedulingPolicy=
 * (chrt). Neither can be set from inside a running process, and without them the bench reported the
 * pipeline of `npm start` (0.80 of the ceiling), not the service's (0.86-0.94, mean 0.92; docs/ARCHITECTURE.md,
 * "Threads"). Resolves to the child's exit code, or undefined without a unit to read.
 */
async function rerunUnderUnitSettings(logger: Logger): Promise<number | undefined> {
  let unit: ServiceUnitSettings;
  try {
    unit = serviceUnitSettings();
  } catch {
    // No unit beside the package: the container image, whose ENV and entrypoint set the same things.
    return undefined;
  }
  // Forwarded from the start: a stop that comes while chrt is probed is handled once the child runs.
  let child: ChildProcess | undefined;
  const forward = (signal: NodeJS.Signals) => child?.kill(signal);
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  for (const signal of signals) process.on(signal, forward);
  try {
    const node = [process.execPath, ...process.execArgv, ...process.argv.slice(1), AS_STARTED];
    let command = node;
    if (unit.scheduling && unit.scheduling !== schedulingPolicy()) {
      if (canStartUnder(unit.scheduling)) command = underSchedulingPolicy(unit.scheduling, node);
      else
        logger.warn(
          `chrt --${unit.scheduling} is not available here: measuring under the ${schedulingPolicy() ?? 'default'} CPU scheduling policy`,
        );
    }
    const started = spawn(command[0]!, command.slice(1), { stdio: 'inherit', env: { ...process.env, ...unit.env } });
    child = started;
    return await new Promise<number>((resolve, reject) => {
      started.once('error', reject);
      started.once('exit', (code, signal) => resolve(code ?? 128 + (signal ? os.constants.signals[signal] : 0)));
    });
  } finally {
    for (const signal of signals) process.off(signal, forward);
  }
}
