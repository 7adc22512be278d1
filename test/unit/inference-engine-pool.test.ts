import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crashWorkerForTest, type InferenceEngine } from '../../src/inference/engine.js';
import {
  EngineClosedError,
  EnginePool,
  NoExecutionProviderError,
  WorkerCrashedError,
  type SessionSettings,
} from '../../src/inference/index.js';
import { directScores } from '../helpers/direct-scores.js';
import { seededInput, testSessionSettings, writeTinyModel } from '../helpers/tiny-model.js';

const logger = pino({ level: 'silent' });
const SIZE = 32;
const dims = [1, 3, SIZE, SIZE];
let modelPath: string;
let pool: EnginePool;

const settings = (over: Partial<SessionSettings> = {}): SessionSettings => testSessionSettings(modelPath, over);

beforeAll(async () => {
  modelPath = await writeTinyModel({ size: SIZE, channels: 16, depth: 3, classes: 10, seed: 11 });
  pool = await EnginePool.create(settings(), logger, 2);
}, 60_000);
afterAll(async () => {
  await pool?.close();
});

describe('EnginePool', () => {
  it('spreads runs over its workers and answers each with its own frame', async () => {
    expect(pool.parallelism).toBe(2);
    expect(pool.provider).toBe('cpu');
    const inputs = Array.from({ length: 6 }, (_, k) => seededInput(SIZE, 100 + k));
    const expected = await Promise.all(inputs.map((x) => directScores(modelPath, x, dims)));
    const runs = inputs.map((x) => pool.run({ data: x.slice(), dims }));
    // Sent at once, the six wait three to a worker: the least loaded takes each.
    expect(pool.loads).toEqual([3, 3]);
    const outputs = await Promise.all(runs);
    for (const [k, out] of outputs.entries()) {
      const got = Array.from(out.scores);
      for (const [i, v] of got.entries()) expect(v).toBeCloseTo(expected[k]![i]!, 5);
    }
    expect(pool.loads).toEqual([0, 0]);
  });

  it('a crashed worker fails only its own runs, and is restarted by the next run it gets', async () => {
    const engines = (pool as unknown as { engines: InferenceEngine[] }).engines;
    const input = seededInput(SIZE, 7);
    // The first worker dies before it reads the run queued behind the crash; the second is not touched.
    const crashed = engines[0]![crashWorkerForTest]();
    const onFirst = pool.run({ data: input.slice(), dims }); // both idle: the first takes it
    const onSecond = pool.run({ data: input.slice(), dims });
    await crashed;
    await expect(onFirst).rejects.toBeInstanceOf(WorkerCrashedError);
    await expect(onSecond).resolves.toMatchObject({ scores: expect.any(Float32Array) });
    const after = await Promise.all([pool.run({ data: input.slice(), dims }), pool.run({ data: input.slice(), dims })]);
    expect(after.map((o) => o.scores.length)).toEqual([10, 10]);
    expect(pool.restarts).toBe(1);
  });

  it('refuses a worker count below one, and fails as a lone engine does when the first worker cannot load', async () => {
    await expect(EnginePool.create(settings(), logger, 0)).rejects.toThrow(/positive integer/);
    await expect(EnginePool.create(settings({ executionProviders: ['qnn'] }), logger, 2)).rejects.toBeInstanceOf(NoExecutionProviderError);
  });

  it('close ends every worker; runs after it are refused', async () => {
    const other = await EnginePool.create(settings(), logger, 2);
    await other.close();
    await expect(other.run({ data: seededInput(SIZE, 1), dims })).rejects.toBeInstanceOf(EngineClosedError);
  });
});
