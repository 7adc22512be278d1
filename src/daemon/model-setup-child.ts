// Runs prepareModel in a child process for the daemon. Building and quantizing the model peak at
// several hundred MB that glibc does not give back; done in the daemon itself, that memory would stay
// resident for as long as the daemon runs. The child exits when done, and its memory goes with it.
import type { Config } from '../config/index.js';
import { createLogger } from '../ops/index.js';
import { prepareModel, type PreparedModel } from './model-setup.js';

/** `level` and `logFd` are the parent logger's: a one-shot command keeps stdout for its data. */
export type ChildRequest = { config: Config; level: string; logFd: 1 | 2 };
export type ChildMessage =
  | { kind: 'status'; status: string }
  | { kind: 'done'; model: PreparedModel }
  | { kind: 'failed'; name: string; message: string };

process.once('message', (request: ChildRequest) => {
  // The child writes to the parent's stdout or stderr itself (inherited, not relayed), so it formats its
  // lines as the parent does: the same log.format, and under systemd the same journal stream (the
  // environment's JOURNAL_STREAM names it), hence the same `<N>` priority prefix, once.
  const logger = createLogger({ level: request.level, name: 'inceptiond', fd: request.logFd, format: request.config.log.format });
  const send = (message: ChildMessage) => new Promise<void>((resolve) => process.send!(message, undefined, {}, () => resolve()));
  prepareModel(request.config, logger, { onStatus: (status) => void send({ kind: 'status', status }) })
    .then(
      (model) => send({ kind: 'done', model }),
      (err: unknown) => send({ kind: 'failed', name: (err as Error).name, message: (err as Error).message }),
    )
    .finally(() => process.disconnect());
});
