import type { Logger } from 'pino';
import { type EngineOptions, InferenceEngine } from './engine.js';
import type { EngineInfo, InferenceOutput, InputTensor, ProviderAttempt, SessionSettings } from './types.js';

/**
 * Several inference workers, each with its own ORT session, behind the engine's interface
 * (`inference.workers`). On two cores, two single-threaded sessions keep both cores busier than one
 * session with two intra-op threads, whose second thread waits at every operator while the next frame
 * is decoded (docs/ARCHITECTURE.md, "Threads"); each session costs its own memory. A run goes to the
 * worker with the fewest runs outstanding, so Results can complete out of order: callers that need
 * order await their runs in order (the source pipeline does). Each worker restarts on its own after a
 * crash, as a lone engine does.
 */
export class EnginePool {
  private constructor(private readonly engines: InferenceEngine[]) {}

  /**
   * The first worker picks the execution provider; the others open the same one, so a provider probe
   * or an accelerator's compilation is not repeated per worker.
   */
  static async create(settings: SessionSettings, logger: Logger, workers: number, options: EngineOptions = {}): Promise<EnginePool> {
    if (!Number.isInteger(workers) || workers < 1) throw new RangeError(`workers must be a positive integer, got ${workers}`);
    const first = await InferenceEngine.create(settings, logger.child({ worker: 1 }), options);
    const engines = [first];
    try {
      for (let k = 2; k <= workers; k++) {
        const same = { ...settings, executionProviders: [first.provider] };
        engines.push(await InferenceEngine.create(same, logger.child({ worker: k }), options));
      }
    } catch (err) {
      await Promise.all(engines.map((e) => e.close()));
      throw err;
    }
    return new EnginePool(engines);
  }

  /** Runs in flight at once without one waiting behind another. */
  get parallelism(): number {
    return this.engines.length;
  }
  get provider(): string {
    return this.engines[0]!.provider;
  }
  /** The first worker's (the one that chose the provider). */
  get attempts(): readonly ProviderAttempt[] {
    return this.engines[0]!.attempts;
  }
  get info(): EngineInfo {
    return this.engines[0]!.info;
  }
  get restarts(): number {
    return this.engines.reduce((n, e) => n + e.restarts, 0);
  }
  /** Runs outstanding per worker. */
  get loads(): number[] {
    return this.engines.map((e) => e.pending);
  }
  get oldestPendingMs(): number {
    return Math.max(...this.engines.map((e) => e.oldestPendingMs));
  }

  run(tensor: InputTensor): Promise<InferenceOutput> {
    let least = this.engines[0]!;
    for (const e of this.engines) if (e.pending < least.pending) least = e;
    return least.run(tensor);
  }

  async close(): Promise<void> {
    await Promise.all(this.engines.map((e) => e.close()));
  }
}
