import { describe, expect, it } from 'vitest';
import { AdaroundStepper, GAMMA, ZETA, type StepConstants, type StepGeometry } from '../../src/model/quantize/adaround-step.js';
import { mulberry32 } from '../../src/util/index.js';

/**
 * AdaRound's step written out per weight in plain arithmetic (float64), as the paper's equations
 * (21)–(25) read: the ORT graph must compute the same V, Adam moments and gradients.
 */
function referenceStep(
  geo: StepGeometry,
  c: StepConstants,
  state: { V: Float64Array; m: Float64Array; v: Float64Array },
  X: Float32Array,
  T: Float32Array,
  s: { beta: number; regScale: number; learningRate: number; step: number },
): void {
  const { outChannels: M, groups: G, rowLength: Kg, batch: B } = geo;
  const Mg = M / G;
  const count = M * Kg;
  const h = new Float64Array(count);
  const dh = new Float64Array(count);
  const soft = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    const row = Math.floor(i / Kg);
    const sig = 1 / (1 + Math.exp(-state.V[i]!));
    const stretched = sig * (ZETA - GAMMA) + GAMMA;
    let hv = Math.min(1, Math.max(0, stretched));
    let d = stretched > 0 && stretched < 1 ? (ZETA - GAMMA) * sig * (1 - sig) : 0;
    let q = c.floorQ[i]! + hv;
    if (q > c.qmax || q < c.qmin) {
      q = Math.min(c.qmax, Math.max(c.qmin, q));
      d = 0;
    }
    if (hv < 0) hv = 0;
    h[i] = hv;
    dh[i] = d;
    soft[i] = c.rowScale[row]! * (q - c.rowZero[row]!);
  }
  const grad = new Float64Array(count);
  for (let b = 0; b < B; b++) {
    for (let m = 0; m < M; m++) {
      const g = Math.floor(m / Mg);
      let y = c.bias?.[m] ?? 0;
      for (let k = 0; k < Kg; k++) y += soft[m * Kg + k]! * X[(g * B + b) * Kg + k]!;
      const err = geo.relu && y <= 0 ? 0 : (2 / B) * (y - T[b * M + m]!);
      for (let k = 0; k < Kg; k++) grad[m * Kg + k] += err * X[(g * B + b) * Kg + k]!;
    }
  }
  for (let i = 0; i < count; i++) {
    const row = Math.floor(i / Kg);
    let g = grad[i]! * c.rowScale[row]! * dh[i]!;
    const u = 2 * h[i]! - 1;
    g -= s.regScale * Math.sign(u) * Math.abs(u) ** (s.beta - 1) * dh[i]!;
    state.m[i] = 0.9 * state.m[i]! + 0.1 * g;
    state.v[i] = 0.999 * state.v[i]! + 0.001 * g * g;
    const mHat = state.m[i]! / (1 - 0.9 ** s.step);
    const vHat = state.v[i]! / (1 - 0.999 ** s.step);
    state.V[i] = state.V[i]! - (s.learningRate * mHat) / (Math.sqrt(vHat) + 1e-8);
  }
}

describe('AdaroundStepper (the optimization step on ONNX Runtime)', () => {
  for (const geo of [
    { outChannels: 6, groups: 1, rowLength: 10, batch: 5, relu: true },
    { outChannels: 6, groups: 3, rowLength: 4, batch: 7, relu: false },
    // over the block size (65 536 weights): run as blocks of 32 + 8 rows, and of 3 + 1 groups
    { outChannels: 40, groups: 1, rowLength: 2000, batch: 3, relu: true },
    { outChannels: 40, groups: 4, rowLength: 2000, batch: 3, relu: false },
  ] satisfies StepGeometry[]) {
    it(`matches the equations written out per weight (${geo.outChannels}×${geo.rowLength}, ${geo.groups} group(s), relu ${geo.relu}), warm-up and regularized steps`, async () => {
      const rand = mulberry32(7);
      const { outChannels: M, rowLength: Kg, batch: B, groups: G } = geo;
      const count = M * Kg;
      // floor values near both ends of the range, so the integer clip and its zero gradient are exercised
      const floorQ = Float32Array.from({ length: count }, (_, i) =>
        i % 9 === 0 ? 127 : i % 11 === 0 ? -128 : Math.floor(rand() * 40) - 20,
      );
      const constants: StepConstants = {
        floorQ,
        rowScale: Float32Array.from({ length: M }, () => 0.01 + 0.05 * rand()),
        rowZero: new Float32Array(M),
        qmin: -127,
        qmax: 127,
        bias: Float32Array.from({ length: M }, () => rand() - 0.5),
      };
      // V across the whole sigmoid, including the saturated parts where h clips at 0 or 1
      const V0 = Float32Array.from({ length: count }, () => (rand() - 0.5) * 6);
      const ref = { V: Float64Array.from(V0), m: new Float64Array(count), v: new Float64Array(count) };
      const stepper = await AdaroundStepper.create(geo, constants, Float32Array.from(V0));
      try {
        const steps = [
          { beta: 20, regScale: 0, learningRate: 0.05, step: 1 },
          { beta: 12, regScale: 0.01 * 2 * 12, learningRate: 0.05, step: 2 },
          { beta: 3, regScale: 0.01 * 2 * 3, learningRate: 0.05, step: 3 },
          { beta: 2, regScale: 0.01 * 2 * 2, learningRate: 0.05, step: 4 },
        ];
        for (const s of steps) {
          const X = Float32Array.from({ length: G * B * Kg }, () => rand() * 2);
          const T = Float32Array.from({ length: B * M }, () => rand() - 0.2);
          await stepper.step(X, T, s);
          referenceStep(geo, constants, ref, X, T, s);
        }
        const V = stepper.V;
        let moved = 0;
        for (let i = 0; i < count; i++) {
          expect(V[i]).toBeCloseTo(ref.V[i]!, 4);
          if (Math.abs(ref.V[i]! - V0[i]!) > 1e-3) moved++;
        }
        // the comparison means something only if the steps moved most weights
        expect(moved).toBeGreaterThan(count / 2);
      } finally {
        await stepper.release();
      }
    });
  }

  it('refuses a V of the wrong size and channels that do not split into the groups', async () => {
    const c: StepConstants = {
      floorQ: new Float32Array(12),
      rowScale: new Float32Array(3),
      rowZero: new Float32Array(3),
      qmin: -127,
      qmax: 127,
    };
    await expect(
      AdaroundStepper.create({ outChannels: 3, groups: 1, rowLength: 4, batch: 2, relu: false }, c, new Float32Array(11)),
    ).rejects.toThrow(/11 values/);
    await expect(
      AdaroundStepper.create({ outChannels: 3, groups: 2, rowLength: 4, batch: 2, relu: false }, c, new Float32Array(12)),
    ).rejects.toThrow(/2 groups/);
  });
});
