/**
 * A minimal CNN trainer in plain TypeScript (Float32Array, im2col + matmul loops, hand-written
 * backward passes). Only what the tiny network needs: stride-1 Conv, BatchNorm (batch statistics in
 * training, running statistics in eval — exported as an ONNX BatchNormalization), ReLU, 2×2 MaxPool,
 * 3×3/s1/p1 AveragePool (count_include_pad = 0, ONNX's default), channel Concat, GlobalAveragePool,
 * Linear (Gemm transB = 1) and softmax cross-entropy. Adam with decoupled weight decay.
 */
import { gaussian } from './data.js';

/** Activation batch in NCHW. */
export interface T {
  data: Float32Array;
  n: number;
  c: number;
  h: number;
  w: number;
}

function tensor(n: number, c: number, h: number, w: number): T {
  return { data: new Float32Array(n * c * h * w), n, c, h, w };
}

export class Param {
  readonly grad: Float32Array;
  readonly m: Float32Array;
  readonly v: Float32Array;
  constructor(
    readonly name: string,
    readonly value: Float32Array,
    readonly dims: number[],
    readonly decay: boolean,
  ) {
    this.grad = new Float32Array(value.length);
    this.m = new Float32Array(value.length);
    this.v = new Float32Array(value.length);
  }
}

export interface Layer {
  forward(x: T, train: boolean): T;
  backward(dy: T): T;
  params(): Param[];
}

/** C[M,P] += A[M,K] · B[K,P] (row-major; K unrolled by 4 so each C row is stored a quarter as often). */
function gemmAcc(A: Float32Array, B: Float32Array, C: Float32Array, M: number, K: number, P: number): void {
  for (let m = 0; m < M; m++) {
    const co = m * P;
    const ao = m * K;
    let k = 0;
    for (; k + 4 <= K; k += 4) {
      const a0 = A[ao + k]!;
      const a1 = A[ao + k + 1]!;
      const a2 = A[ao + k + 2]!;
      const a3 = A[ao + k + 3]!;
      const b0 = k * P;
      const b1 = b0 + P;
      const b2 = b1 + P;
      const b3 = b2 + P;
      for (let p = 0; p < P; p++) C[co + p] += a0 * B[b0 + p]! + a1 * B[b1 + p]! + a2 * B[b2 + p]! + a3 * B[b3 + p]!;
    }
    for (; k < K; k++) {
      const a = A[ao + k]!;
      const b0 = k * P;
      for (let p = 0; p < P; p++) C[co + p] += a * B[b0 + p]!;
    }
  }
}

/** G[M,K] += A[M,P] · B[K,P]ᵀ (dot products; four B rows per pass over an A row). */
function gemmABt(A: Float32Array, B: Float32Array, G: Float32Array, M: number, K: number, P: number): void {
  for (let m = 0; m < M; m++) {
    const ao = m * P;
    const go = m * K;
    let k = 0;
    for (; k + 4 <= K; k += 4) {
      const b0 = k * P;
      const b1 = b0 + P;
      const b2 = b1 + P;
      const b3 = b2 + P;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      for (let p = 0; p < P; p++) {
        const a = A[ao + p]!;
        s0 += a * B[b0 + p]!;
        s1 += a * B[b1 + p]!;
        s2 += a * B[b2 + p]!;
        s3 += a * B[b3 + p]!;
      }
      G[go + k] += s0;
      G[go + k + 1] += s1;
      G[go + k + 2] += s2;
      G[go + k + 3] += s3;
    }
    for (; k < K; k++) {
      const b0 = k * P;
      let s0 = 0;
      for (let p = 0; p < P; p++) s0 += A[ao + p]! * B[b0 + p]!;
      G[go + k] += s0;
    }
  }
}

/** D[K,P] += A[M,K]ᵀ · B[M,P] (M unrolled by 4). */
function gemmAtB(A: Float32Array, B: Float32Array, D: Float32Array, M: number, K: number, P: number): void {
  let m = 0;
  for (; m + 4 <= M; m += 4) {
    const r0 = m * P;
    const r1 = r0 + P;
    const r2 = r1 + P;
    const r3 = r2 + P;
    for (let k = 0; k < K; k++) {
      const a0 = A[m * K + k]!;
      const a1 = A[(m + 1) * K + k]!;
      const a2 = A[(m + 2) * K + k]!;
      const a3 = A[(m + 3) * K + k]!;
      const d0 = k * P;
      for (let p = 0; p < P; p++) D[d0 + p] += a0 * B[r0 + p]! + a1 * B[r1 + p]! + a2 * B[r2 + p]! + a3 * B[r3 + p]!;
    }
  }
  for (; m < M; m++) {
    const r0 = m * P;
    for (let k = 0; k < K; k++) {
      const a0 = A[m * K + k]!;
      const d0 = k * P;
      for (let p = 0; p < P; p++) D[d0 + p] += a0 * B[r0 + p]!;
    }
  }
}

export class Conv implements Layer {
  readonly weight: Param;
  readonly bias?: Param;
  private cols?: Float32Array;
  private x?: T;
  /** the first layer's input gradient is never needed */
  needInputGrad = true;
  constructor(
    readonly name: string,
    readonly cin: number,
    readonly cout: number,
    readonly k: number,
    withBias: boolean,
    rand: () => number,
  ) {
    const g = gaussian(rand);
    const fan = cin * k * k;
    const std = Math.sqrt(2 / fan);
    const w = new Float32Array(cout * fan);
    for (let i = 0; i < w.length; i++) w[i] = g() * std;
    this.weight = new Param(`${name}.weight`, w, [cout, cin, k, k], true);
    if (withBias) this.bias = new Param(`${name}.bias`, new Float32Array(cout), [cout], false);
  }
  get pad(): number {
    return (this.k - 1) >> 1;
  }
  params(): Param[] {
    return this.bias ? [this.weight, this.bias] : [this.weight];
  }

  /** cols[K, N·HW]: column s·HW + p holds the receptive field of output pixel p of sample s. */
  private im2col(x: T, cols: Float32Array): void {
    const { n: N, c: C, h: H, w: W } = x;
    const k = this.k;
    const pad = this.pad;
    const HW = H * W;
    const NHW = N * HW;
    const src = x.data;
    let row = 0;
    for (let c = 0; c < C; c++) {
      for (let ki = 0; ki < k; ki++) {
        for (let kj = 0; kj < k; kj++, row++) {
          for (let s = 0; s < N; s++) {
            const ro = row * NHW + s * HW;
            const base = (s * C + c) * HW;
            for (let y = 0; y < H; y++) {
              const iy = y + ki - pad;
              const o = ro + y * W;
              if (iy < 0 || iy >= H) {
                cols.fill(0, o, o + W);
                continue;
              }
              const io = base + iy * W;
              for (let xx = 0; xx < W; xx++) {
                const ix = xx + kj - pad;
                cols[o + xx] = ix >= 0 && ix < W ? src[io + ix]! : 0;
              }
            }
          }
        }
      }
    }
  }

  forward(x: T, train: boolean): T {
    if (x.c !== this.cin) throw new Error(`${this.name}: ${x.c} input channels, expected ${this.cin}`);
    const { n: N, h: H, w: W } = x;
    const HW = H * W;
    const NHW = N * HW;
    const K = this.cin * this.k * this.k;
    const Co = this.cout;
    const wt = this.weight.value;
    const b = this.bias?.value;
    const cols = new Float32Array(K * NHW);
    this.im2col(x, cols);
    // outT[Co, N·HW] = W[Co, K] · cols[K, N·HW]
    const outT = new Float32Array(Co * NHW);
    if (b) for (let co = 0; co < Co; co++) outT.fill(b[co]!, co * NHW, (co + 1) * NHW);
    gemmAcc(wt, cols, outT, Co, K, NHW);
    const y = tensor(N, Co, H, W);
    for (let co = 0; co < Co; co++) {
      for (let s = 0; s < N; s++) y.data.set(outT.subarray(co * NHW + s * HW, co * NHW + (s + 1) * HW), (s * Co + co) * HW);
    }
    if (train) {
      this.cols = cols;
      this.x = x;
    }
    return y;
  }

  backward(dy: T): T {
    const x = this.x!;
    const { n: N, h: H, w: W, c: C } = x;
    const HW = H * W;
    const NHW = N * HW;
    const k = this.k;
    const pad = this.pad;
    const K = C * k * k;
    const Co = this.cout;
    const wt = this.weight.value;
    const gw = this.weight.grad;
    const gb = this.bias?.grad;
    const cols = this.cols!;
    const dT = new Float32Array(Co * NHW);
    for (let co = 0; co < Co; co++) {
      for (let s = 0; s < N; s++) dT.set(dy.data.subarray((s * Co + co) * HW, (s * Co + co + 1) * HW), co * NHW + s * HW);
    }
    if (gb) {
      for (let co = 0; co < Co; co++) {
        let acc = 0;
        for (let p = co * NHW; p < (co + 1) * NHW; p++) acc += dT[p]!;
        gb[co] += acc;
      }
    }
    gemmABt(dT, cols, gw, Co, K, NHW);
    this.cols = undefined;
    const dx = tensor(N, C, H, W);
    if (!this.needInputGrad) return dx;
    // dcols[K, N·HW] = Wᵀ · dT, reusing the cols buffer.
    const dcols = cols;
    dcols.fill(0);
    gemmAtB(wt, dT, dcols, Co, K, NHW);
    // col2im
    const dxd = dx.data;
    let row = 0;
    for (let c = 0; c < C; c++) {
      for (let ki = 0; ki < k; ki++) {
        for (let kj = 0; kj < k; kj++, row++) {
          for (let s = 0; s < N; s++) {
            const ro = row * NHW + s * HW;
            const base = (s * C + c) * HW;
            for (let yy = 0; yy < H; yy++) {
              const iy = yy + ki - pad;
              if (iy < 0 || iy >= H) continue;
              const io = base + iy * W;
              const o = ro + yy * W;
              for (let xx = 0; xx < W; xx++) {
                const ix = xx + kj - pad;
                if (ix >= 0 && ix < W) dxd[io + ix] += dcols[o + xx]!;
              }
            }
          }
        }
      }
    }
    return dx;
  }
}

export class BatchNorm implements Layer {
  readonly gamma: Param;
  readonly beta: Param;
  readonly runningMean: Float32Array;
  readonly runningVar: Float32Array;
  readonly eps = 1e-5;
  readonly momentum = 0.1;
  private xhat?: Float32Array;
  private invStd?: Float32Array;
  private shape?: T;
  constructor(
    readonly name: string,
    readonly c: number,
  ) {
    this.gamma = new Param(`${name}.scale`, new Float32Array(c).fill(1), [c], false);
    this.beta = new Param(`${name}.bias`, new Float32Array(c), [c], false);
    this.runningMean = new Float32Array(c);
    this.runningVar = new Float32Array(c).fill(1);
  }
  params(): Param[] {
    return [this.gamma, this.beta];
  }
  forward(x: T, train: boolean): T {
    const { n: N, c: C, h: H, w: W } = x;
    const HW = H * W;
    const M = N * HW;
    const y = tensor(N, C, H, W);
    const g = this.gamma.value;
    const b = this.beta.value;
    const xd = x.data;
    const yd = y.data;
    if (!train) {
      for (let c = 0; c < C; c++) {
        const sc = g[c]! / Math.sqrt(this.runningVar[c]! + this.eps);
        const sh = b[c]! - this.runningMean[c]! * sc;
        for (let s = 0; s < N; s++) {
          const o = (s * C + c) * HW;
          for (let p = 0; p < HW; p++) yd[o + p] = xd[o + p]! * sc + sh;
        }
      }
      return y;
    }
    const xhat = new Float32Array(xd.length);
    const invStd = new Float32Array(C);
    for (let c = 0; c < C; c++) {
      let sum = 0;
      for (let s = 0; s < N; s++) {
        const o = (s * C + c) * HW;
        for (let p = 0; p < HW; p++) sum += xd[o + p]!;
      }
      const mean = sum / M;
      let sq = 0;
      for (let s = 0; s < N; s++) {
        const o = (s * C + c) * HW;
        for (let p = 0; p < HW; p++) {
          const dv = xd[o + p]! - mean;
          sq += dv * dv;
        }
      }
      const v = sq / M;
      const is = 1 / Math.sqrt(v + this.eps);
      invStd[c] = is;
      this.runningMean[c] = (1 - this.momentum) * this.runningMean[c]! + this.momentum * mean;
      this.runningVar[c] = (1 - this.momentum) * this.runningVar[c]! + this.momentum * (sq / Math.max(1, M - 1));
      for (let s = 0; s < N; s++) {
        const o = (s * C + c) * HW;
        for (let p = 0; p < HW; p++) {
          const xh = (xd[o + p]! - mean) * is;
          xhat[o + p] = xh;
          yd[o + p] = g[c]! * xh + b[c]!;
        }
      }
    }
    this.xhat = xhat;
    this.invStd = invStd;
    this.shape = x;
    return y;
  }
  backward(dy: T): T {
    const { n: N, c: C, h: H, w: W } = this.shape!;
    const HW = H * W;
    const M = N * HW;
    const xhat = this.xhat!;
    const dx = tensor(N, C, H, W);
    const d = dy.data;
    for (let c = 0; c < C; c++) {
      let sdy = 0;
      let sdyx = 0;
      for (let s = 0; s < N; s++) {
        const o = (s * C + c) * HW;
        for (let p = 0; p < HW; p++) {
          sdy += d[o + p]!;
          sdyx += d[o + p]! * xhat[o + p]!;
        }
      }
      this.gamma.grad[c] += sdyx;
      this.beta.grad[c] += sdy;
      const k = (this.gamma.value[c]! * this.invStd![c]!) / M;
      for (let s = 0; s < N; s++) {
        const o = (s * C + c) * HW;
        for (let p = 0; p < HW; p++) dx.data[o + p] = k * (M * d[o + p]! - sdy - xhat[o + p]! * sdyx);
      }
    }
    return dx;
  }
}

export class Relu implements Layer {
  private y?: T;
  params(): Param[] {
    return [];
  }
  forward(x: T, train: boolean): T {
    const y = tensor(x.n, x.c, x.h, x.w);
    for (let i = 0; i < x.data.length; i++) y.data[i] = Math.max(x.data[i]!, 0);
    if (train) this.y = y;
    return y;
  }
  backward(dy: T): T {
    const y = this.y!;
    const dx = tensor(y.n, y.c, y.h, y.w);
    for (let i = 0; i < dx.data.length; i++) dx.data[i] = y.data[i]! > 0 ? dy.data[i]! : 0;
    return dx;
  }
}

/** 2×2, stride 2 (even sizes only). */
export class MaxPool2 implements Layer {
  private argmax?: Int32Array;
  private shape?: T;
  params(): Param[] {
    return [];
  }
  forward(x: T, train: boolean): T {
    const { n: N, c: C, h: H, w: W } = x;
    const oh = H >> 1;
    const ow = W >> 1;
    const y = tensor(N, C, oh, ow);
    const arg = new Int32Array(y.data.length);
    const xd = x.data;
    let o = 0;
    for (let sc = 0; sc < N * C; sc++) {
      const base = sc * H * W;
      for (let i = 0; i < oh; i++) {
        for (let j = 0; j < ow; j++, o++) {
          let best = -Infinity;
          let bi = 0;
          for (let di = 0; di < 2; di++) {
            for (let dj = 0; dj < 2; dj++) {
              const idx = base + (2 * i + di) * W + 2 * j + dj;
              if (xd[idx]! > best) {
                best = xd[idx]!;
                bi = idx;
              }
            }
          }
          y.data[o] = best;
          arg[o] = bi;
        }
      }
    }
    if (train) {
      this.argmax = arg;
      this.shape = x;
    }
    return y;
  }
  backward(dy: T): T {
    const s = this.shape!;
    const dx = tensor(s.n, s.c, s.h, s.w);
    const arg = this.argmax!;
    for (let o = 0; o < dy.data.length; o++) dx.data[arg[o]!] += dy.data[o]!;
    return dx;
  }
}

/** 3×3, stride 1, pad 1, padding excluded from the count (ONNX AveragePool count_include_pad = 0). */
export class AvgPool3 implements Layer {
  private shape?: T;
  params(): Param[] {
    return [];
  }
  private static count(i: number, j: number, H: number, W: number): number {
    const rows = Math.min(H - 1, i + 1) - Math.max(0, i - 1) + 1;
    const cols = Math.min(W - 1, j + 1) - Math.max(0, j - 1) + 1;
    return rows * cols;
  }
  forward(x: T, train: boolean): T {
    const { n: N, c: C, h: H, w: W } = x;
    const y = tensor(N, C, H, W);
    for (let sc = 0; sc < N * C; sc++) {
      const base = sc * H * W;
      for (let i = 0; i < H; i++) {
        for (let j = 0; j < W; j++) {
          let acc = 0;
          for (let a = Math.max(0, i - 1); a <= Math.min(H - 1, i + 1); a++) {
            for (let b = Math.max(0, j - 1); b <= Math.min(W - 1, j + 1); b++) acc += x.data[base + a * W + b]!;
          }
          y.data[base + i * W + j] = acc / AvgPool3.count(i, j, H, W);
        }
      }
    }
    if (train) this.shape = x;
    return y;
  }
  backward(dy: T): T {
    const { n: N, c: C, h: H, w: W } = this.shape!;
    const dx = tensor(N, C, H, W);
    for (let sc = 0; sc < N * C; sc++) {
      const base = sc * H * W;
      for (let i = 0; i < H; i++) {
        for (let j = 0; j < W; j++) {
          const g = dy.data[base + i * W + j]! / AvgPool3.count(i, j, H, W);
          for (let a = Math.max(0, i - 1); a <= Math.min(H - 1, i + 1); a++) {
            for (let b = Math.max(0, j - 1); b <= Math.min(W - 1, j + 1); b++) dx.data[base + a * W + b] += g;
          }
        }
      }
    }
    return dx;
  }
}

export class Sequential implements Layer {
  constructor(readonly layers: Layer[]) {}
  params(): Param[] {
    return this.layers.flatMap((l) => l.params());
  }
  forward(x: T, train: boolean): T {
    let y = x;
    for (const l of this.layers) y = l.forward(y, train);
    return y;
  }
  backward(dy: T): T {
    let d = dy;
    for (let i = this.layers.length - 1; i >= 0; i--) d = this.layers[i]!.backward(d);
    return d;
  }
}

/** Runs branches on the same input and concatenates their outputs along channels. */
export class Branches implements Layer {
  private splits: number[] = [];
  constructor(readonly branches: Sequential[]) {}
  params(): Param[] {
    return this.branches.flatMap((b) => b.params());
  }
  forward(x: T, train: boolean): T {
    const outs = this.branches.map((b) => b.forward(x, train));
    const C = outs.reduce((a, o) => a + o.c, 0);
    const { n: N, h: H, w: W } = outs[0]!;
    const HW = H * W;
    const y = tensor(N, C, H, W);
    for (let s = 0; s < N; s++) {
      let off = 0;
      for (const o of outs) {
        y.data.set(o.data.subarray(s * o.c * HW, (s + 1) * o.c * HW), (s * C + off) * HW);
        off += o.c;
      }
    }
    this.splits = outs.map((o) => o.c);
    return y;
  }
  backward(dy: T): T {
    const { n: N, c: C, h: H, w: W } = dy;
    const HW = H * W;
    let dx: T | undefined;
    let off = 0;
    this.branches.forEach((b, bi) => {
      const c = this.splits[bi]!;
      const part = tensor(N, c, H, W);
      for (let s = 0; s < N; s++) part.data.set(dy.data.subarray((s * C + off) * HW, (s * C + off + c) * HW), s * c * HW);
      off += c;
      const d = b.backward(part);
      if (!dx) dx = d;
      else for (let i = 0; i < d.data.length; i++) dx.data[i] += d.data[i]!;
    });
    return dx!;
  }
}

export class GlobalAvgPool implements Layer {
  private shape?: T;
  params(): Param[] {
    return [];
  }
  forward(x: T, train: boolean): T {
    const { n: N, c: C, h: H, w: W } = x;
    const HW = H * W;
    const y = tensor(N, C, 1, 1);
    for (let sc = 0; sc < N * C; sc++) {
      let acc = 0;
      for (let p = 0; p < HW; p++) acc += x.data[sc * HW + p]!;
      y.data[sc] = acc / HW;
    }
    if (train) this.shape = x;
    return y;
  }
  backward(dy: T): T {
    const { n: N, c: C, h: H, w: W } = this.shape!;
    const HW = H * W;
    const dx = tensor(N, C, H, W);
    for (let sc = 0; sc < N * C; sc++) dx.data.fill(dy.data[sc]! / HW, sc * HW, (sc + 1) * HW);
    return dx;
  }
}

/** y = x·Wᵀ + b on [N, in] (any trailing 1×1 spatial dims are flattened). */
export class Linear implements Layer {
  readonly weight: Param;
  readonly bias: Param;
  private x?: T;
  constructor(
    readonly name: string,
    readonly nin: number,
    readonly nout: number,
    rand: () => number,
  ) {
    const g = gaussian(rand);
    const w = new Float32Array(nout * nin);
    const std = Math.sqrt(1 / nin);
    for (let i = 0; i < w.length; i++) w[i] = g() * std;
    this.weight = new Param(`${name}.weight`, w, [nout, nin], true);
    this.bias = new Param(`${name}.bias`, new Float32Array(nout), [nout], false);
  }
  params(): Param[] {
    return [this.weight, this.bias];
  }
  forward(x: T, train: boolean): T {
    const N = x.n;
    const y = tensor(N, this.nout, 1, 1);
    for (let s = 0; s < N; s++) {
      for (let o = 0; o < this.nout; o++) {
        let acc = this.bias.value[o]!;
        for (let i = 0; i < this.nin; i++) acc += this.weight.value[o * this.nin + i]! * x.data[s * this.nin + i]!;
        y.data[s * this.nout + o] = acc;
      }
    }
    if (train) this.x = x;
    return y;
  }
  backward(dy: T): T {
    const x = this.x!;
    const dx = tensor(x.n, x.c, x.h, x.w);
    for (let s = 0; s < x.n; s++) {
      for (let o = 0; o < this.nout; o++) {
        const g = dy.data[s * this.nout + o]!;
        this.bias.grad[o] += g;
        for (let i = 0; i < this.nin; i++) {
          this.weight.grad[o * this.nin + i] += g * x.data[s * this.nin + i]!;
          dx.data[s * this.nin + i] += g * this.weight.value[o * this.nin + i]!;
        }
      }
    }
    return dx;
  }
}

/** Softmax cross-entropy: mean loss, correct count, and d(loss)/d(logits). */
export function softmaxCrossEntropy(logits: T, labels: ArrayLike<number>): { loss: number; correct: number; grad: T } {
  const N = logits.n;
  const K = logits.c;
  const grad = tensor(N, K, 1, 1);
  let loss = 0;
  let correct = 0;
  for (let s = 0; s < N; s++) {
    const o = s * K;
    let mx = -Infinity;
    let arg = 0;
    for (let k = 0; k < K; k++) {
      if (logits.data[o + k]! > mx) {
        mx = logits.data[o + k]!;
        arg = k;
      }
    }
    let sum = 0;
    for (let k = 0; k < K; k++) sum += Math.exp(logits.data[o + k]! - mx);
    const y = labels[s]!;
    if (arg === y) correct++;
    loss += -(logits.data[o + y]! - mx - Math.log(sum));
    for (let k = 0; k < K; k++) grad.data[o + k] = (Math.exp(logits.data[o + k]! - mx) / sum - (k === y ? 1 : 0)) / N;
  }
  return { loss: loss / N, correct, grad };
}

export function softmax(logits: T): Float32Array {
  const out = new Float32Array(logits.data.length);
  const K = logits.c;
  for (let s = 0; s < logits.n; s++) {
    const o = s * K;
    let mx = -Infinity;
    for (let k = 0; k < K; k++) mx = Math.max(mx, logits.data[o + k]!);
    let sum = 0;
    for (let k = 0; k < K; k++) sum += Math.exp(logits.data[o + k]! - mx);
    for (let k = 0; k < K; k++) out[o + k] = Math.exp(logits.data[o + k]! - mx) / sum;
  }
  return out;
}

export class Adam {
  private t = 0;
  constructor(
    readonly params: Param[],
    readonly beta1 = 0.9,
    readonly beta2 = 0.999,
    readonly eps = 1e-8,
    readonly weightDecay = 1e-4,
  ) {}
  zeroGrad(): void {
    for (const p of this.params) p.grad.fill(0);
  }
  step(lr: number): void {
    this.t++;
    const bc1 = 1 - this.beta1 ** this.t;
    const bc2 = 1 - this.beta2 ** this.t;
    for (const p of this.params) {
      const { value, grad, m, v } = p;
      const wd = p.decay ? this.weightDecay : 0;
      for (let i = 0; i < value.length; i++) {
        const g = grad[i]!;
        m[i] = this.beta1 * m[i]! + (1 - this.beta1) * g;
        v[i] = this.beta2 * v[i]! + (1 - this.beta2) * g * g;
        value[i] -= lr * (m[i]! / bc1 / (Math.sqrt(v[i]! / bc2) + this.eps) + wd * value[i]!);
      }
    }
  }
}
