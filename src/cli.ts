#!/usr/bin/env node
// Command-line entry (bin: inceptiond). Parses arguments and hands each command to the module that owns it.
import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { pino, type Logger } from 'pino';
import {
  CALIBRATION_METHODS,
  ConfigError,
  DEFAULT_CALIBRATION_METHOD,
  EXIT,
  configToJSON,
  loadConfig,
  redactConfig,
  type Config,
} from './config/index.js';
import { createLogger, packageVersion } from './ops/index.js';

/** An error whose message is the whole story for the user: printed without a stack. */
class UsageError extends Error {}

function loadConfigOrThrow(file: string | undefined): Config {
  return loadConfig({ file, env: process.env }).config;
}

/**
 * Logger for one-shot commands: warnings and errors only, on stderr, so stdout carries nothing but the
 * command's data (`classify --json | jq` must not meet a log line between two results).
 */
function commandLogger(level = 'warn'): Logger {
  return createLogger({ level, name: 'inceptiond', destination: pino.destination({ dest: 2, sync: true }) });
}

async function runDaemon(opts: { config?: string }): Promise<void> {
  const config = loadConfigOrThrow(opts.config);
  const logger = createLogger({ level: config.log.level, name: 'inceptiond' });
  process.on('unhandledRejection', (err) => {
    logger.fatal({ err }, 'unhandled promise rejection: exiting so the supervisor restarts a clean process');
    process.exit(EXIT.RUNTIME);
  });
  process.on('uncaughtException', (err) => {
    logger.fatal({ err }, 'uncaught exception: exiting so the supervisor restarts a clean process');
    process.exit(EXIT.RUNTIME);
  });
  const { Daemon } = await import('./daemon/index.js');
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

function buildProgram(): Command {
  const program = new Command('inceptiond')
    .description('Edge daemon: camera frames → Inception V2 on ONNX Runtime → labels over MQTT')
    .version(packageVersion)
    .showHelpAfterError()
    .exitOverride();

  const configOption = () =>
    new Option('-c, --config <file>', 'configuration file (JSON); also INCEPTIOND_CONFIG');

  program
    .command('run')
    .description('run the daemon')
    .addOption(configOption())
    .action(runDaemon);

  program
    .command('classify')
    .description('classify image files once and print the labels')
    .addOption(configOption())
    .option('--model <path>', 'ONNX model (its manifest is found beside it)')
    .option('--top <k>', 'number of labels', parsePositiveInt)
    .option('--json', 'print one JSON object per image')
    .argument('<images...>')
    .action(async (images: string[], opts) => {
      const { classifyCommand } = await import('./classify.js');
      const config = loadConfigOrThrow(opts.config);
      await classifyCommand(config, commandLogger(), { images, model: opts.model, top: opts.top, json: !!opts.json });
    });

  const model = program.command('model').description('build, fetch, quantize, evaluate and inspect models');
  model
    .command('build')
    .description('write the Inception V2 topology with seeded (synthetic) weights, and its manifest')
    .option('--out <path>', 'output file', 'models/inception-v2-built.onnx')
    .option('--seed <n>', 'weight seed', parseNonNegativeInt, 1)
    .addOption(
      new Option('--variant <name>', 'network layout').choices(['bn-inception', 'rethinking-v2']).default('bn-inception'),
    )
    .action(async (opts) => {
      const { writeBuiltModel } = await import('./model/index.js');
      const built = await writeBuiltModel(opts.out, { seed: opts.seed, variant: opts.variant });
      process.stdout.write(
        `wrote ${built.modelPath} (${(built.params / 1e6).toFixed(2)} M parameters, ${(built.macs / 1e9).toFixed(2)} G multiply-adds)\n` +
          `wrote ${built.manifestPath}\n` +
          'note: the weights are synthetic (seeded random): the labels it outputs mean nothing\n',
      );
    });

  model
    .command('fetch')
    .description('download a catalogued model (models/*.json), verify its size and sha256, write its manifest')
    .argument('[name]', 'catalogue name', 'inception-v2')
    .option('--url <url>', 'download from this URL instead of the catalogue one')
    .option('--out <path>', 'output file')
    .action(async (name: string, opts) => {
      const { fetchModel } = await import('./model/index.js');
      const got = await fetchModel({ name, url: opts.url, out: opts.out, logger: commandLogger('info') });
      process.stdout.write(`wrote ${got.path}\nwrote ${got.manifestPath}\n`);
    });

  model
    .command('quantize')
    .description('static INT8 quantization (QDQ) of an FP32 ONNX classifier, calibrated on images; writes OUT and its manifest')
    .argument('<in>', 'FP32 ONNX model (its manifest is found beside it)')
    .argument('<out>', 'INT8 ONNX model to write (OUT.json is written beside it)')
    .requiredOption('--calibration <dir>', 'folder (or glob) of calibration images; --from-source fills it first')
    .addOption(
      new Option('--method <method>', 'how activation ranges are calibrated').choices([...CALIBRATION_METHODS]).default(DEFAULT_CALIBRATION_METHOD),
    )
    .option('--percentile <p>', 'percentile of |activation| kept by --method percentile (default 99.999)', parsePercentile)
    // The names and lines below are targets.ts's TARGET_NAMES and targetHelpLines() (a test holds them
    // equal): the CLI must not load the quantizer to print its help.
    .addOption(
      new Option('--target <preset>', 'execution provider to shape the QDQ model for (see Targets below)')
        .choices(['cpu', 'cpu-x86', 'cpu-arm', 'qnn-htp', 'acl', 'vsinpu', 'xnnpack'])
        .default('cpu'),
    )
    .addOption(
      new Option('--activation-type <type>', "activation quantization type (default: the target's, uint8 for cpu)").choices(['uint8', 'int8', 'uint16']),
    )
    .option('--per-channel', "Conv/Gemm weights with one scale per output channel (default: the target's)")
    .option('--no-per-channel', 'one weight scale per tensor')
    .option('--keep-activations', 'keep Relu/Clip as quantized node units instead of folding them into the producing layer')
    .option('--exclude <node...>', 'node names (or their output names) to keep float')
    .option('--max-images <n>', 'calibrate on at most this many images', parsePositiveInt)
    .option('--from-source <n>', 'first capture N frames from the configured source into the calibration folder', parsePositiveInt)
    .option('--json', 'print the report as JSON')
    .addOption(configOption())
    .addHelpText(
      'after',
      [
        '',
        'Targets (--target):',
        '  cpu      ORT CPU, x86-64 (default; alias cpu-x86): uint8 activations, per-channel symmetric int8 weights',
        "  cpu-arm  ORT CPU, ARM64 (chosen from ORT's docs, not timed here): int8 activations (S8S8), per-channel symmetric int8 weights",
        '  qnn-htp  Qualcomm NPU (QNN HTP): uint8 (or uint16) activations, per-tensor asymmetric uint8 weights, ranges ≥ 1e-4, quantized Softmax',
        '  acl      Arm Compute Library EP: uint8 activations, per-tensor symmetric int8 weights (ACL has no per-channel)',
        '  vsinpu   VeriSilicon NPU (i.MX 8M Plus, TIM-VX): uint8 activations, per-tensor asymmetric uint8 weights, quantized Softmax',
        '  xnnpack  XNNPACK EP: int8 activations, per-channel symmetric int8 weights (qs8); with uint8 activations, per-tensor uint8 (qu8)',
        'Relu/Clip are folded into the producing layer unless --keep-activations; Softmax stays float unless the target quantizes it.',
        '--activation-type and --per-channel override the target where it can run the result, else exit 2.',
      ].join('\n'),
    )
    .action(async (input: string, output: string, opts) => {
      if (opts.percentile !== undefined && opts.method !== 'percentile') {
        throw new UsageError(`--percentile applies to --method percentile only (got --method ${opts.method})`);
      }
      if (path.resolve(input) === path.resolve(output)) throw new UsageError('OUT must differ from IN');
      const { resolveTarget, TargetOptionError } = await import('./model/quantize/targets.js');
      try {
        resolveTarget(opts.target, { activationType: opts.activationType, perChannel: opts.perChannel, keepActivations: opts.keepActivations });
      } catch (err) {
        if (err instanceof TargetOptionError) throw new UsageError(err.message);
        throw err;
      }
      const { quantizeCommand } = await import('./quantize-command.js');
      await quantizeCommand(() => loadConfigOrThrow(opts.config), commandLogger(), {
        input,
        output,
        calibration: opts.calibration,
        method: opts.method,
        percentile: opts.percentile,
        target: opts.target,
        activationType: opts.activationType,
        perChannel: opts.perChannel,
        keepActivations: opts.keepActivations,
        exclude: opts.exclude,
        maxImages: opts.maxImages,
        fromSource: opts.fromSource,
        json: !!opts.json,
      });
    });

  model
    .command('eval')
    .description("compare a candidate model with a reference: top-1/top-5 agreement, output SQNR, latency with the daemon's session options")
    .argument('<ref>', 'reference model (e.g. FP32); its manifest says how to preprocess the images')
    .argument('<cand>', 'candidate model (e.g. INT8)')
    .requiredOption('--images <dir>', 'folder (or glob) of images')
    .option('--repeats <n>', 'timed passes over the images (latency is the median run)', parsePositiveInt, 3)
    .option('--json', 'print {"images","top1Agreement","top5Agreement","sqnrDb","refMs","candMs","latencyRatio"}')
    .addOption(configOption())
    .action(async (ref: string, cand: string, opts) => {
      const { evalCommand } = await import('./quantize-command.js');
      const config = loadConfigOrThrow(opts.config);
      await evalCommand(config, commandLogger(), { ref, cand, images: opts.images, repeats: opts.repeats, json: !!opts.json });
    });

  model
    .command('inspect')
    .description('inputs, outputs, opset, operator histogram, size and precision of a model')
    .argument('<path>')
    .option('--json', 'print JSON')
    .action(async (file: string, opts) => {
      const { inspectModel, formatModelInfo } = await import('./model/index.js');
      const info = await inspectModel(file);
      process.stdout.write(opts.json ? `${JSON.stringify(info, null, 2)}\n` : `${formatModelInfo(info)}\n`);
    });

  const cfg = program.command('config').description('check or print the configuration');
  cfg
    .command('check')
    .description('validate a configuration file (exit 78 when invalid)')
    .addOption(configOption())
    .action((opts) => {
      loadConfigOrThrow(opts.config);
      process.stdout.write('configuration is valid\n');
    });
  cfg
    .command('print')
    .description('print the effective configuration, secrets redacted')
    .addOption(configOption())
    .action((opts) => {
      const config = loadConfigOrThrow(opts.config);
      process.stdout.write(`${configToJSON(redactConfig(config))}\n`);
    });

  program
    .command('bench')
    .description('raw session.run rate vs whole-pipeline rate, latency percentiles, RSS')
    .addOption(configOption())
    .option('--seconds <n>', 'seconds per measurement', parsePositiveInt, 10)
    .option('--json', 'print JSON')
    .action(async (opts) => {
      const { benchCommand } = await import('./bench.js');
      const config = loadConfigOrThrow(opts.config);
      await benchCommand(config, commandLogger(), { seconds: opts.seconds, json: !!opts.json });
    });

  program
    .command('doctor')
    .description('check camera, model, execution providers and broker, each with a verdict')
    .addOption(configOption())
    .option('--json', 'print {"ok", "checks": [{"name", "ok", "detail", "data"?}]}; the inference check\'s data has the node placement')
    .action(async (opts) => {
      const { doctorCommand } = await import('./doctor.js');
      const config = loadConfigOrThrow(opts.config);
      process.exitCode = (await doctorCommand(config, commandLogger('error'), { json: !!opts.json })) ? EXIT.OK : EXIT.RUNTIME;
    });

  return program;
}

function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`expected a positive integer, got "${value}"`);
  return n;
}

function parsePercentile(value: string): number {
  const n = Number(value);
  if (!(n > 0 && n <= 100)) throw new UsageError(`--percentile must be a number in (0, 100], got "${value}"`);
  return n;
}

function parseNonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`expected a non-negative integer, got "${value}"`);
  return n;
}

async function main(argv: string[]): Promise<void> {
  // `inceptiond classify … | head` closes the pipe early: that is the reader being done, not an error.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(EXIT.OK);
    throw err;
  });
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and version are "errors" to commander; their exit code is 0.
      process.exitCode = err.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
      return;
    }
    if (err instanceof ConfigError) {
      process.stderr.write(`inceptiond: ${err.message}\n`);
      process.exitCode = EXIT.CONFIG;
      return;
    }
    if (err instanceof UsageError) {
      process.stderr.write(`inceptiond: ${err.message}\n`);
      process.exitCode = EXIT.USAGE;
      return;
    }
    let message = (err as Error).message ?? String(err);
    // A command that loads ONNX Runtime on a platform it has no binary for (32-bit ARM): say that.
    if (/onnxruntime_binding\.node/.test(message)) {
      const { bundledRuntimeProblem } = await import('./inference/runtime.js');
      message = bundledRuntimeProblem() ?? message;
    }
    process.stderr.write(`inceptiond: ${message.split('\n')[0]}\n`);
    process.exitCode = EXIT.RUNTIME;
  }
}

await main(process.argv);
