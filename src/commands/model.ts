// `inceptiond model build|fetch|quantize|eval|inspect`: registration only. Each action imports model/
// (which loads ONNX Runtime) or its *-action.ts when it runs.
import path from 'node:path';
import { Option, type Command } from 'commander';
import { CALIBRATION_METHODS, DEFAULT_CALIBRATION_METHOD } from '../config/index.js';
import {
  parseDecibels,
  parseNonNegativeInt,
  parsePercentile,
  parsePositiveInt,
  parsePositiveRatio,
  UsageError,
  type CommandContext,
} from './shared.js';

export function register(program: Command, ctx: CommandContext): void {
  const model = program.command('model').description('build, fetch, quantize, evaluate and inspect models');
  model
    .command('build')
    .description('write the Inception V2 topology with seeded (synthetic) weights, and its manifest')
    .option('--out <path>', 'output file', 'models/inception-v2-built.onnx')
    .option('--seed <n>', 'weight seed', parseNonNegativeInt, 1)
    .addOption(new Option('--variant <name>', 'network layout').choices(['bn-inception', 'rethinking-v2']).default('bn-inception'))
    .action(async (opts) => {
      const { writeBuiltModel } = await import('../model/index.js');
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
    .option('--timeout-sec <s>', 'fail an attempt when the connection, the response or the body is silent this long', parsePositiveInt, 30)
    .option(
      '--retries <n>',
      'further attempts after a transient failure (5xx, reset, timeout), with backoff; the .part is resumed',
      parseNonNegativeInt,
      4,
    )
    .addHelpText('after', '\nThe proxy comes from HTTPS_PROXY / HTTP_PROXY, except for the hosts in NO_PROXY.')
    .action(async (name: string, opts) => {
      const { fetchModel } = await import('../model/index.js');
      const got = await fetchModel({
        name,
        url: opts.url,
        out: opts.out,
        timeoutMs: opts.timeoutSec * 1000,
        retries: opts.retries,
        logger: ctx.commandLogger('info'),
      });
      process.stdout.write(`wrote ${got.path}\nwrote ${got.manifestPath}\n`);
    });

  registerQuantize(model, ctx);

  model
    .command('eval')
    .description(
      "compare a candidate model with a reference: top-1/top-5 agreement, output SQNR, latency with the daemon's session options",
    )
    .argument('<ref>', 'reference model (e.g. FP32); its manifest says how to preprocess the images')
    .argument('<cand>', 'candidate model (e.g. INT8)')
    .requiredOption('--images <dir>', 'folder (or glob) of images')
    .option('--repeats <n>', 'timed passes over the images (latency is the median run)', parsePositiveInt, 3)
    .option('--json', 'print {"images","top1Agreement","top5Agreement","sqnrDb","refMs","candMs","latencyRatio"}')
    .addOption(ctx.configOption())
    .action(async (ref: string, cand: string, opts) => {
      const { evalCommand } = await import('./eval-action.js');
      const config = ctx.loadConfig(opts.config);
      await evalCommand(config, ctx.commandLogger(), { ref, cand, images: opts.images, repeats: opts.repeats, json: !!opts.json });
    });

  model
    .command('inspect')
    .description('inputs, outputs, opset, operator histogram, size and precision of a model')
    .argument('<path>')
    .option('--json', 'print JSON')
    .action(async (file: string, opts) => {
      const { inspectModel, formatModelInfo } = await import('../model/index.js');
      const info = await inspectModel(file);
      process.stdout.write(opts.json ? `${JSON.stringify(info, null, 2)}\n` : `${formatModelInfo(info)}\n`);
    });
}

function registerQuantize(model: Command, ctx: CommandContext): void {
  model
    .command('quantize')
    .description('static INT8 quantization (QDQ) of an FP32 ONNX classifier, calibrated on images; writes OUT and its manifest')
    .argument('<in>', 'FP32 ONNX model (its manifest is found beside it)')
    .argument('<out>', 'INT8 ONNX model to write (OUT.json is written beside it)')
    .requiredOption('--calibration <dir>', 'folder (or glob) of calibration images; --from-source fills it first')
    .addOption(
      new Option('--method <method>', 'how activation ranges are calibrated')
        .choices([...CALIBRATION_METHODS])
        .default(DEFAULT_CALIBRATION_METHOD),
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
      new Option('--activation-type <type>', "activation quantization type (default: the target's, uint8 for cpu)").choices([
        'uint8',
        'int8',
        'uint16',
      ]),
    )
    .option('--per-channel', "Conv/Gemm weights with one scale per output channel (default: the target's)")
    .option('--no-per-channel', 'one weight scale per tensor')
    .option('--keep-activations', 'keep Relu/Clip as quantized node units instead of folding them into the producing layer')
    .option('--exclude <node...>', 'node names (or their output names) to keep float')
    .option('--max-images <n>', 'calibrate on at most this many images', parsePositiveInt)
    .option(
      '--eval-images <dir>',
      'held-out images for the end-to-end figure (logits SQNR, top-1 agreement); default: with 20 calibration images or more, every 5th of them, not calibrated on',
    )
    .option(
      '--bias-correction [n]',
      'sequential bias correction, measured on the first N calibration images (default 16)',
      parsePositiveInt,
    )
    .option(
      '--target-sqnr <db>',
      'mixed precision: keep the fewest activations float that bring the logits SQNR (held-out images, else calibration images) to DB',
      parseDecibels,
    )
    .option(
      '--max-latency-ratio <r>',
      "with --target-sqnr: keep a float step only while the model's latency stays within R × the FP32 model's (e.g. 0.4)",
      parsePositiveRatio,
    )
    .option(
      '--search-images <n>',
      'with --target-sqnr: the images each step is measured on, the first N held-out (else calibration) images (default 16; more generalize better and take longer)',
      parsePositiveInt,
    )
    .option(
      '--sensitivity-images <n>',
      "with --target-sqnr: the images each activation's gain is measured on to rank them, the first N of the search images (default 4)",
      parsePositiveInt,
    )
    .option('--max-steps <n>', 'with --target-sqnr: the most float steps tried (default 12)', parsePositiveInt)
    .option(
      '--adaround [iterations]',
      "learn each Conv/Gemm weight's rounding (AdaRound) on the first 16 calibration images, ITERATIONS steps per layer (default 2000: about 5 min for Inception V2 on two cores)",
      parsePositiveInt,
    )
    .option(
      '--adaround-images <n>',
      "with --adaround: the calibration images it learns on (default 16; more generalize better, and memory grows with them: a generation's layer inputs and outputs on every image)",
      parsePositiveInt,
    )
    .option('--from-source <n>', 'first capture N frames from the configured source into the calibration folder', parsePositiveInt)
    .option('--json', 'print the report as JSON')
    .addOption(ctx.configOption())
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
      if (opts.maxLatencyRatio !== undefined && opts.targetSqnr === undefined) {
        throw new UsageError('--max-latency-ratio bounds the mixed-precision search: it needs --target-sqnr');
      }
      if (opts.adaroundImages !== undefined && opts.adaround === undefined) {
        throw new UsageError('--adaround-images sizes AdaRound: it needs --adaround');
      }
      for (const [option, value] of [
        ['--search-images', opts.searchImages],
        ['--sensitivity-images', opts.sensitivityImages],
        ['--max-steps', opts.maxSteps],
      ] as const) {
        if (value !== undefined && opts.targetSqnr === undefined) {
          throw new UsageError(`${option} sizes the mixed-precision search: it needs --target-sqnr`);
        }
      }
      const { resolveTarget, TargetOptionError } = await import('../model/quantize/targets.js');
      try {
        resolveTarget(opts.target, {
          activationType: opts.activationType,
          perChannel: opts.perChannel,
          keepActivations: opts.keepActivations,
        });
      } catch (err) {
        if (err instanceof TargetOptionError) throw new UsageError(err.message);
        throw err;
      }
      const { quantizeCommand } = await import('./quantize-action.js');
      await quantizeCommand(() => ctx.loadConfig(opts.config), ctx.commandLogger(), {
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
        evalImages: opts.evalImages,
        biasCorrection: opts.biasCorrection === undefined ? undefined : opts.biasCorrection === true ? 16 : opts.biasCorrection,
        adaround: opts.adaround === undefined ? undefined : opts.adaround === true ? 2000 : opts.adaround,
        adaroundImages: opts.adaroundImages,
        fromSource: opts.fromSource,
        targetSqnrDb: opts.targetSqnr,
        maxLatencyRatio: opts.maxLatencyRatio,
        searchImages: opts.searchImages,
        sensitivityImages: opts.sensitivityImages,
        maxSteps: opts.maxSteps,
        json: !!opts.json,
      });
    });
}
