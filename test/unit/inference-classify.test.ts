import { describe, expect, it } from 'vitest';
import { topLabels } from '../../src/inference/index.js';

const probs = (...v: number[]) => new Float32Array(v);

describe('topLabels', () => {
  it('returns the k highest probabilities, best first, with their labels', () => {
    const scores = probs(0.05, 0.5, 0.1, 0.3, 0.05);
    const labels = ['a', 'b', 'c', 'd', 'e'];
    const top = topLabels(scores, { k: 3, threshold: 0, labels, activation: 'softmax' });
    expect(top.map((t) => [t.index, t.label])).toEqual([
      [1, 'b'],
      [3, 'd'],
      [2, 'c'],
    ]);
    expect(top.map((t) => t.score)).toEqual([scores[1], scores[3], scores[2]]);
  });

  it('drops labels below the threshold', () => {
    const top = topLabels(probs(0.05, 0.5, 0.1, 0.3, 0.05), { k: 5, threshold: 0.2, activation: 'softmax' });
    expect(top.map((t) => t.index)).toEqual([1, 3]);
  });

  it('falls back to "class <index>" without labels or past their end', () => {
    const top = topLabels(probs(0.1, 0.2, 0.7), { k: 2, threshold: 0, labels: ['x'], activation: 'softmax' });
    expect(top.map((t) => t.label)).toEqual(['class 2', 'class 1']);
  });

  it('applies softmax to logits', () => {
    // softmax(1, 2, 3): e^(x-3) / (e^-2 + e^-1 + 1)
    const denominator = Math.exp(-2) + Math.exp(-1) + 1;
    const top = topLabels(probs(1, 3, 2), { k: 3, threshold: 0, activation: 'none' });
    expect(top.map((t) => t.index)).toEqual([1, 2, 0]);
    expect(top[0]!.score).toBeCloseTo(1 / denominator, 6);
    expect(top[1]!.score).toBeCloseTo(Math.exp(-1) / denominator, 6);
    expect(top[2]!.score).toBeCloseTo(Math.exp(-2) / denominator, 6);
  });

  it('stays finite for huge logits (stable softmax)', () => {
    const top = topLabels(probs(1000, 999, -1000), { k: 2, threshold: 0, activation: 'none' });
    const denominator = 1 + Math.exp(-1) + Math.exp(-2000);
    expect(top[0]!.score).toBeCloseTo(1 / denominator, 6);
    expect(top[1]!.score).toBeCloseTo(Math.exp(-1) / denominator, 6);
  });

  it('clamps probabilities outside [0, 1] (e.g. from a quantized output)', () => {
    const top = topLabels(probs(1.02, -0.01, 0.3), { k: 3, threshold: -1, activation: 'softmax' });
    expect(top.map((t) => t.score)).toEqual([1, scores(0.3), 0]);
  });

  it('orders ties by index and ignores NaN', () => {
    const top = topLabels(probs(0.2, NaN, 0.4, 0.2, 0.4), { k: 4, threshold: 0, activation: 'softmax' });
    expect(top.map((t) => t.index)).toEqual([2, 4, 0, 3]);
  });

  it('matches a full sort on a 1000-class vector', () => {
    let state = 42;
    const v = new Float32Array(1000).map(() => ((state = (state * 1664525 + 1013904223) >>> 0) / 2 ** 32) * 20 - 10);
    const top = topLabels(v, { k: 5, threshold: 0, activation: 'none' });
    const sorted = Array.from(v, (s, i) => [s, i] as const).sort((a, b) => b[0] - a[0]);
    expect(top.map((t) => t.index)).toEqual(sorted.slice(0, 5).map(([, i]) => i));
  });

  it('returns nothing for k = 0', () => {
    expect(topLabels(probs(0.5, 0.5), { k: 0, threshold: 0, activation: 'softmax' })).toEqual([]);
  });
});

/** The float32 value a literal becomes once stored in a Float32Array. */
function scores(v: number): number {
  return Math.fround(v);
}
