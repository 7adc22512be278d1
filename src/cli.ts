#!/usr/bin/env node
// Command-line entry (bin: inceptiond): the program, its commands (src/commands/, one file each) and the
// mapping of errors to exit codes.
import { Command, CommanderError } from 'commander';
import { COMMANDS, UsageError, createCommandContext } from './commands/index.js';
import { ConfigError, EXIT, maskUrlCredentials } from './config/index.js';
import { packageVersion } from './ops/index.js';

function buildProgram(): Command {
  const program = new Command('inceptiond')
    .description('Edge daemon: camera frames → Inception V2 on ONNX Runtime → labels over MQTT')
    .version(packageVersion)
    .showHelpAfterError()
    .exitOverride();
  const ctx = createCommandContext();
  for (const register of COMMANDS) register(program, ctx);
  return program;
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
    // Every message printed here is masked: an error may quote a URL with user:password@ in it.
    if (err instanceof ConfigError) {
      process.stderr.write(`inceptiond: ${maskUrlCredentials(err.message)}\n`);
      process.exitCode = EXIT.CONFIG;
      return;
    }
    if (err instanceof UsageError) {
      process.stderr.write(`inceptiond: ${maskUrlCredentials(err.message)}\n`);
      process.exitCode = EXIT.USAGE;
      return;
    }
    let message = (err as Error).message ?? String(err);
    // A command that loads ONNX Runtime on a platform it has no binary for (32-bit ARM): say that.
    if (/onnxruntime_binding\.node/.test(message)) {
      const { bundledRuntimeProblem } = await import('./inference/runtime.js');
      message = bundledRuntimeProblem() ?? message;
    }
    process.stderr.write(`inceptiond: ${maskUrlCredentials(message.split('\n')[0] ?? '')}\n`);
    process.exitCode = EXIT.RUNTIME;
  }
}

await main(process.argv);
