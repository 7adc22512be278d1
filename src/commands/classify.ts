// `inceptiond classify IMAGE...`: registration only; the work (ONNX Runtime, sharp) is in classify-action.ts.
import type { Command } from 'commander';
import { parsePositiveInt, type CommandContext } from './shared.js';

export function register(program: Command, ctx: CommandContext): void {
  program
    .command('classify')
    .description('classify image files once and print the labels')
    .addOption(ctx.configOption())
    .option('--model <path>', 'ONNX model (its manifest is found beside it)')
    .option('--top <k>', 'number of labels', parsePositiveInt)
    .option('--json', 'print one JSON object per image')
    .argument('<images...>')
    .action(async (images: string[], opts) => {
      const { classifyCommand } = await import('./classify-action.js');
      const config = ctx.loadConfig(opts.config);
      await classifyCommand(config, ctx.commandLogger(), { images, model: opts.model, top: opts.top, json: !!opts.json });
    });
}
