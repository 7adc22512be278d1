// The command line's commands, in the order `inceptiond --help` lists them. Each file registers one
// command; its work sits in a *-action.ts module that the action imports when it runs.
import { register as bench } from './bench.js';
import { register as classify } from './classify.js';
import { register as config } from './config.js';
import { register as doctor } from './doctor.js';
import { register as model } from './model.js';
import { register as run } from './run.js';
import type { RegisterCommand } from './shared.js';

export const COMMANDS: readonly RegisterCommand[] = [run, classify, model, config, bench, doctor];

export { UsageError, createCommandContext, type CommandContext, type RegisterCommand } from './shared.js';
