export interface TopLabelsOptions {
  /** How many labels at most. */
  k: number;
  /** Labels with a (post-activation) score below this are left out. */
  threshold: number;
  /** Class names by output index; `class <index>` where missing. */
  labels?: readonly string[];
  /** 'softmax': scores are already probabilities; 'none': logits, softmax applied here. */
  activation: 'softmax' | 'none';
}

export interface LabelScore {
  index: number;
  label: string;
  /** In [0, 1]. */
  score: number;
}

/**
 * The k best classes, best first (ties: lower index first). Runs once per frame over ~1000 scores,
 * so it keeps a small sorted window of candidates instead of sorting everything, and applies
 * softmax only to the candidates (softmax keeps the order; the denominator is one pass).
 * NaN scores are ignored.
 */
export function topLabels(scores: Float32Array, options: TopLabelsOptions): LabelScore[] {
  const { threshold, labels, activation } = options;
  const k = Math.min(Math.floor(options.k), scores.length);
  if (!(k > 0)) return [];

  // Candidate window, sorted descending by raw score; ties keep the earlier index.
  const best: number[] = [];
  for (let i = 0; i < scores.length; i++) {
    const v = scores[i]!;
    if (Number.isNaN(v)) continue;
    if (best.length === k && v <= scores[best[k - 1]!]!) continue;
    let pos = best.length === k ? k - 1 : best.length;
    while (pos > 0 && scores[best[pos - 1]!]! < v) {
      if (pos < k) best[pos] = best[pos - 1]!;
      pos--;
    }
    best[pos] = i;
  }
  if (best.length === 0) return [];

  let toProbability: (raw: number) => number = (raw) => raw;
  if (activation === 'none') {
    // Numerically stable: exp(x - max) never overflows and the largest term is exactly 1.
    const max = scores[best[0]!]!;
    if (max === Infinity) {
      let infinite = 0;
      for (const v of scores) if (v === Infinity) infinite++;
      toProbability = (raw) => (raw === Infinity ? 1 / infinite : 0);
    } else {
      let sum = 0;
      for (const v of scores) if (!Number.isNaN(v)) sum += Math.exp(v - max);
      toProbability = (raw) => Math.exp(raw - max) / sum;
    }
  }

  const result: LabelScore[] = [];
  for (const index of best) {
    const score = Math.min(1, Math.max(0, toProbability(scores[index]!)));
    if (score < threshold) break; // sorted, so every later one is below too
    result.push({ index, label: labels?.[index] ?? `class ${index}`, score });
  }
  return result;
}
