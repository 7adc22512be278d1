/**
 * Streaming histograms for percentile and entropy calibration.
 *
 * ORT grows its histogram by adding bins when a later batch exceeds the range, so the bin count
 * depends on the order of the images. Here the bin count stays fixed: when a value falls outside
 * the range, the range doubles and adjacent bin pairs merge (bin edges stay aligned, so the merge
 * is exact). Memory per tensor is constant whatever the number of images.
 */

export interface Histogram {
  /** counts per bin, bins of equal width */
  counts: Float64Array;
  /** lower edge of bin 0 */
  lo: number;
  /** upper edge of the last bin */
  hi: number;
  /** observed extremes of the raw values */
  min: number;
  max: number;
}

/**
 * Histogram of |x| over [0, T], T doubling as needed. Used by percentile calibration: the
 * activations are almost all ReLU outputs (non-negative), for which |x| = x, and ORT's default
 * percentile mode is this symmetric one.
 */
export class AbsHistogram {
  readonly counts: Float64Array;
  private top = 0;
  private min = Infinity;
  private max = -Infinity;

  constructor(readonly bins = 2048) {
    if (!Number.isInteger(bins) || bins < 2 || bins % 2 !== 0) throw new Error(`bins must be an even integer ≥ 2, got ${bins}`);
    this.counts = new Float64Array(bins);
  }

  add(values: ArrayLike<number>): void {
    let absmax = 0;
    let mn = this.min;
    let mx = this.max;
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      if (Number.isNaN(v)) continue;
      if (v < mn) mn = v;
      if (v > mx) mx = v;
      const a = Math.abs(v);
      if (a > absmax) absmax = a;
    }
    this.min = mn;
    this.max = mx;
    if (!Number.isFinite(absmax)) throw new Error('activation contains an infinite value');
    if (absmax === 0 && this.top === 0) {
      this.counts[0]! += countFinite(values);
      return;
    }
    if (this.top === 0) this.top = absmax;
    while (absmax > this.top) {
      mergePairsTowardsZero(this.counts);
      this.top *= 2;
    }
    const n = this.bins;
    const width = this.top / n;
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      if (Number.isNaN(v)) continue;
      let b = Math.floor(Math.abs(v) / width);
      if (b >= n) b = n - 1;
      this.counts[b]! += 1;
    }
  }

  snapshot(): Histogram {
    return { counts: this.counts, lo: 0, hi: this.top, min: this.min, max: this.max };
  }
}

/**
 * Histogram of x over [-T, T] (symmetric around zero, as the entropy method expects), T doubling
 * as needed.
 */
export class SignedHistogram {
  readonly counts: Float64Array;
  private top = 0;
  private min = Infinity;
  private max = -Infinity;

  constructor(readonly bins = 2048) {
    if (!Number.isInteger(bins) || bins < 4 || bins % 4 !== 0) throw new Error(`bins must be a multiple of 4, got ${bins}`);
    this.counts = new Float64Array(bins);
  }

  add(values: ArrayLike<number>): void {
    let absmax = 0;
    let mn = this.min;
    let mx = this.max;
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      if (Number.isNaN(v)) continue;
      if (v < mn) mn = v;
      if (v > mx) mx = v;
      const a = Math.abs(v);
      if (a > absmax) absmax = a;
    }
    this.min = mn;
    this.max = mx;
    if (!Number.isFinite(absmax)) throw new Error('activation contains an infinite value');
    if (absmax === 0 && this.top === 0) {
      // all zeros so far: count them in the bin just above zero; the range is set by later data.
      this.counts[this.bins / 2]! += countFinite(values);
      return;
    }
    if (this.top === 0) this.top = absmax;
    while (absmax > this.top) {
      mergePairsAroundCentre(this.counts);
      this.top *= 2;
    }
    const n = this.bins;
    const width = (2 * this.top) / n;
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      if (Number.isNaN(v)) continue;
      let b = Math.floor((v + this.top) / width);
      if (b >= n) b = n - 1;
      if (b < 0) b = 0;
      this.counts[b]! += 1;
    }
  }

  snapshot(): Histogram {
    return { counts: this.counts, lo: -this.top, hi: this.top, min: this.min, max: this.max };
  }
}

function countFinite(values: ArrayLike<number>): number {
  let n = 0;
  for (let i = 0; i < values.length; i++) if (!Number.isNaN(values[i]!)) n++;
  return n;
}

/** [0,T] → [0,2T]: bins (2k, 2k+1) merge into bin k, the upper half empties. */
function mergePairsTowardsZero(counts: Float64Array): void {
  const n = counts.length;
  for (let k = 0; k < n / 2; k++) counts[k] = counts[2 * k]! + counts[2 * k + 1]!;
  counts.fill(0, n / 2);
}

/** [-T,T] → [-2T,2T]: old bin j lands in new bin n/4 + floor(j/2). */
function mergePairsAroundCentre(counts: Float64Array): void {
  const n = counts.length;
  const merged = new Float64Array(n);
  for (let j = 0; j < n; j++) merged[n / 4 + (j >> 1)]! += counts[j]!;
  counts.set(merged);
}

/**
 * Percentile threshold on an |x| histogram: the upper edge of the first bin where the CDF reaches
 * p/100 (ORT takes that bin's lower edge, which clips values that are inside the percentile).
 * The range is [-t, t] clamped to the observed [min, max] (ORT compute_percentile, symmetric mode).
 */
export function percentileRange(h: Histogram, percentile: number): { min: number; max: number } {
  if (!(percentile > 0 && percentile <= 100)) throw new Error(`percentile must be in (0, 100], got ${percentile}`);
  if (h.min > h.max) throw new Error('empty histogram');
  const total = h.counts.reduce((a, b) => a + b, 0);
  const width = (h.hi - h.lo) / h.counts.length;
  const target = (percentile / 100) * total;
  let cum = 0;
  let t = h.hi;
  for (let i = 0; i < h.counts.length; i++) {
    cum += h.counts[i]!;
    if (cum >= target) {
      t = h.lo + (i + 1) * width;
      break;
    }
  }
  return { min: Math.max(-t, h.min), max: Math.min(t, h.max) };
}

/** eps-smoothing of ORT smooth_distribution: zero bins get eps, taken from the non-zero bins. */
function smooth(p: Float64Array, eps = 1e-4): Float64Array | undefined {
  let zeros = 0;
  for (const v of p) if (v === 0) zeros++;
  const nonzeros = p.length - zeros;
  if (nonzeros === 0) return undefined;
  const eps1 = (eps * zeros) / nonzeros;
  if (eps1 >= 1) return undefined;
  const out = new Float64Array(p.length);
  for (let i = 0; i < p.length; i++) out[i] = p[i] === 0 ? eps : p[i]! - eps1;
  for (const v of out) if (v <= 0) return undefined;
  return out;
}

/** KL(p‖q) after normalizing both to sum 1 (scipy.stats.entropy). */
export function klDivergence(p: ArrayLike<number>, q: ArrayLike<number>): number {
  if (p.length !== q.length) throw new Error('KL divergence needs distributions of equal length');
  let sp = 0;
  let sq = 0;
  for (let i = 0; i < p.length; i++) {
    sp += p[i]!;
    sq += q[i]!;
  }
  if (sp <= 0 || sq <= 0) return Infinity;
  let kl = 0;
  for (let i = 0; i < p.length; i++) {
    const pi = p[i]! / sp;
    if (pi === 0) continue;
    const qi = q[i]! / sq;
    if (qi === 0) return Infinity;
    kl += pi * Math.log(pi / qi);
  }
  return kl;
}

/**
 * TensorRT/ORT entropy calibration on a signed histogram symmetric around zero: for each
 * candidate half-width i (quantizedBins/2 … bins/2 bins), fold the outliers into the edge bins to
 * form p, merge the slice into `quantizedBins` bins and expand them back over p's non-zero bins to
 * form q, and keep the threshold with the smallest KL(p‖q). Unlike ORT, q is expanded in floating
 * point (ORT stores it in an int64 array, truncating) and only over non-empty bins, as TensorRT does.
 */
export function entropyRange(h: Histogram, quantizedBins = 128): { min: number; max: number } {
  const hist = h.counts;
  const numBins = hist.length;
  if (h.min > h.max) throw new Error('empty histogram');
  if (h.hi === h.lo) return { min: h.min, max: h.max };
  if (quantizedBins < 2 || quantizedBins % 2 !== 0 || quantizedBins > numBins) {
    throw new Error(`quantized bins must be even and ≤ ${numBins}, got ${quantizedBins}`);
  }
  const width = (h.hi - h.lo) / numBins;
  const zero = numBins / 2;
  const halfQ = quantizedBins / 2;

  // prefix sums make the outlier counts O(1) per candidate
  const prefix = new Float64Array(numBins + 1);
  for (let i = 0; i < numBins; i++) prefix[i + 1] = prefix[i]! + hist[i]!;

  let bestKl = Infinity;
  let best: [number, number] = [h.lo, h.hi];
  for (let i = halfQ; i <= zero; i++) {
    const start = zero - i;
    const end = Math.min(zero + i, numBins); // exclusive
    const len = end - start;
    const p = new Float64Array(len);
    for (let k = 0; k < len; k++) p[k] = hist[start + k]!;
    p[0]! += prefix[start]!;
    p[len - 1]! += prefix[numBins]! - prefix[end]!;

    const merged = Math.floor(len / quantizedBins);
    const q = new Float64Array(len);
    for (let b = 0; b < quantizedBins; b++) {
      const s = b * merged;
      const e = b === quantizedBins - 1 ? len : s + merged;
      let sum = 0;
      let nonzero = 0;
      for (let k = s; k < e; k++) {
        sum += hist[start + k]!;
        if (p[k] !== 0) nonzero++;
      }
      if (nonzero === 0) continue;
      for (let k = s; k < e; k++) if (p[k] !== 0) q[k] = sum / nonzero;
    }
    const ps = smooth(p);
    const qs = smooth(q);
    const kl = ps && qs ? klDivergence(ps, qs) : Infinity;
    if (kl < bestKl) {
      bestKl = kl;
      best = [h.lo + start * width, h.lo + end * width];
    }
  }
  return { min: Math.max(best[0], h.min), max: Math.min(best[1], h.max) };
}

/** The points a range quantizes to: `levels` values lo, lo + step, …; values beyond the ends clip to them. */
export interface QuantGrid {
  lo: number;
  step: number;
  levels: number;
}

/** ∫₀ᶠ d(t)² dt with d the distance to the nearest integer, for f in [0, 1]. */
function roundingErrorWithinStep(f: number): number {
  return f <= 0.5 ? (f * f * f) / 3 : 1 / 12 - ((1 - f) * (1 - f) * (1 - f)) / 3;
}

/** ∫₀ᵘ d(t)² dt for u ≥ 0 (each whole step contributes 1/12). */
function roundingErrorUpTo(u: number): number {
  const whole = Math.floor(u);
  return whole / 12 + roundingErrorWithinStep(u - whole);
}

/**
 * ∫ₐᵇ (x − q(x))² dx for the grid's quantizer, exactly: clipping error below the first and above the
 * last point, rounding error between them.
 */
export function squaredErrorIntegral(a: number, b: number, grid: QuantGrid): number {
  if (b <= a) return 0;
  const { lo, step, levels } = grid;
  const top = lo + (levels - 1) * step;
  let sum = 0;
  if (a < lo) {
    const e = Math.min(b, lo);
    sum += ((lo - a) ** 3 - (lo - e) ** 3) / 3;
  }
  if (b > top) {
    const s = Math.max(a, top);
    sum += ((b - top) ** 3 - (s - top) ** 3) / 3;
  }
  const s = Math.max(a, lo);
  const e = Math.min(b, top);
  if (e > s && step > 0) sum += step ** 3 * (roundingErrorUpTo((e - lo) / step) - roundingErrorUpTo((s - lo) / step));
  return sum;
}

/**
 * Expected squared quantization error (clipping plus rounding, per value) of the histogram's values
 * under a grid, each bin's count spread evenly over the bin.
 */
export function expectedSquaredError(h: Histogram, grid: QuantGrid, bins?: readonly number[]): number {
  const width = (h.hi - h.lo) / h.counts.length;
  if (width <= 0) return 0;
  let total = 0;
  let err = 0;
  const visit = (i: number): void => {
    const c = h.counts[i]!;
    if (c === 0) return;
    const a = h.lo + i * width;
    total += c;
    err += (c / width) * squaredErrorIntegral(a, a + width, grid);
  };
  if (bins) for (const i of bins) visit(i);
  else for (let i = 0; i < h.counts.length; i++) visit(i);
  return total > 0 ? err / total : 0;
}

/**
 * The clipping range with the smallest expected squared error (expectedSquaredError) for the
 * quantizer `gridOf` builds from a range, searched over the histogram's bin edges: the upper end for
 * a tensor that is never negative (a ReLU output: the grid starts at 0 anyway), the lower end for
 * one never positive, and for a signed tensor a common scale of both ends, then each end alone.
 * Coarse steps of `coarse` bins first, then every bin around the best.
 */
export function mseRange(h: Histogram, gridOf: (r: { min: number; max: number }) => QuantGrid, coarse = 8): { min: number; max: number } {
  if (h.min > h.max) throw new Error('empty histogram');
  const n = h.counts.length;
  const width = (h.hi - h.lo) / n;
  if (width <= 0 || h.min === h.max) return { min: h.min, max: h.max };
  const nonEmpty: number[] = [];
  for (let i = 0; i < n; i++) if (h.counts[i]! > 0) nonEmpty.push(i);
  const cost = (r: { min: number; max: number }): number => expectedSquaredError(h, gridOf(r), nonEmpty);
  // Bin edges strictly between 0 and the observed extreme, nearest to 0 first, the extreme last.
  const edgesTowards = (limit: number): number[] => {
    const out: number[] = [];
    for (let i = 0; i <= n; i++) {
      const e = h.lo + i * width;
      if (limit > 0 ? e > 0 && e < limit : e < 0 && e > limit) out.push(e);
    }
    if (limit < 0) out.reverse();
    out.push(limit);
    return out;
  };
  const search = (candidates: number[], make: (c: number) => { min: number; max: number }): { min: number; max: number } => {
    let best = candidates.length - 1;
    let bestCost = Infinity;
    const tryAt = (k: number): void => {
      const c = cost(make(candidates[k]!));
      if (c < bestCost) {
        bestCost = c;
        best = k;
      }
    };
    for (let k = candidates.length - 1; k >= 0; k -= coarse) tryAt(k);
    const around = best;
    for (let k = Math.max(0, around - coarse + 1); k <= Math.min(candidates.length - 1, around + coarse - 1); k++) tryAt(k);
    return make(candidates[best]!);
  };
  if (h.min >= 0) return search(edgesTowards(h.max), (t) => ({ min: h.min, max: t }));
  if (h.max <= 0) return search(edgesTowards(h.min), (t) => ({ min: t, max: h.max }));
  // Signed: the ends scaled together by α in (0, 1], then the upper end and the lower end alone.
  const steps = Math.max(1, Math.ceil(Math.max(-h.min, h.max) / width));
  const alphas = Array.from({ length: steps }, (_, k) => (k + 1) / steps);
  let r = search(alphas, (a) => ({ min: a * h.min, max: a * h.max }));
  r = search(edgesTowards(h.max), (t) => ({ min: r.min, max: t }));
  r = search(edgesTowards(h.min), (t) => ({ min: t, max: r.max }));
  return r;
}
