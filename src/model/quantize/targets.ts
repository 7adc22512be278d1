/**
 * Quantization targets: how the QDQ model is shaped for the execution provider that will run it.
 * A QDQ model is only fast where the provider recognises its node units and their data types; the
 * same graph with other types runs as DequantizeLinear → float op → QuantizeLinear, or falls back to
 * the CPU. Each preset picks activation type, weight scheme, minimum range and which ops get Q/DQ.
 * No ONNX Runtime import here: the CLI validates options with it before loading anything heavy.
 */
import type { ActivationType, WeightScheme, WeightType } from './numeric.js';

export type TargetName = 'cpu' | 'cpu-arm' | 'qnn-htp' | 'acl' | 'vsinpu' | 'xnnpack';

export const TARGET_NAMES: readonly TargetName[] = ['cpu', 'cpu-arm', 'qnn-htp', 'acl', 'vsinpu', 'xnnpack'];
export const TARGET_ALIASES: Readonly<Record<string, TargetName>> = { 'cpu-x86': 'cpu' };
export const DEFAULT_TARGET: TargetName = 'cpu';

/** Everything the emitter needs to know, resolved from a target and explicit options. */
export interface QdqSettings {
  target: TargetName;
  activationType: ActivationType;
  /** Conv weights */
  weights: WeightScheme;
  /** Gemm weights (differs from Conv only for qnn-htp with per-channel: QNN's FullyConnected is per-tensor) */
  gemmWeights: WeightScheme;
  /** ranges narrower than this are widened (QNN rejects near-zero scales) */
  minRealRange?: number;
  /** Softmax as a DQ → Softmax → Q node unit with the fixed range [0, 1] (else float) */
  quantizeSoftmax: boolean;
  /** Relu/Clip(0, max) as DQ → op → Q node units instead of folded into their producer's range */
  keepActivations: boolean;
}

/** Explicit choices that override a preset's value (each defaults to the target's). */
export interface TargetOverrides {
  /** uint8 for cpu: asymmetric U8S8, what ORT's x86 CPU kernels are fastest with */
  activationType?: ActivationType;
  /** Conv/Gemm weights per output channel (symmetric) or one scale per tensor */
  perChannel?: boolean;
  /** weight integer type */
  weightType?: WeightType;
  /** symmetric weights (zero point in the middle); default true for int8, false for uint8 */
  weightSymmetric?: boolean;
  /** widen narrower ranges to this (QNN: 1e-4) */
  minRealRange?: number;
  /** quantize Softmax with the fixed output range [0, 1] */
  quantizeSoftmax?: boolean;
  /** keep Relu/Clip as quantized node units instead of folding them into their producer (default false) */
  keepActivations?: boolean;
}

/** A target/option combination the provider cannot take (the CLI reports it as a usage error). */
export class TargetOptionError extends Error {
  override name = 'TargetOptionError';
}

interface TargetSpec {
  /** one line for --help */
  summary: string;
  /** allowed activation types, the default first */
  activationTypes: readonly ActivationType[];
  /** why the others are refused */
  activationReason: string;
  /** Conv and Gemm weights for an activation type and a per-channel choice (undefined: the preset's) */
  weights(act: ActivationType, perChannel: boolean | undefined): { conv: WeightScheme; gemm: WeightScheme } | string;
  minRealRange?: number;
  quantizeSoftmax: boolean;
}

const S8_PER_CHANNEL: WeightScheme = { type: 'int8', symmetric: true, perChannel: true };
const S8_PER_TENSOR: WeightScheme = { type: 'int8', symmetric: true, perChannel: false };
const U8_PER_TENSOR: WeightScheme = { type: 'uint8', symmetric: false, perChannel: false };
const same = (w: WeightScheme): { conv: WeightScheme; gemm: WeightScheme } => ({ conv: w, gemm: w });

const TARGETS: Record<TargetName, TargetSpec> = {
  // ORT's CPU kernels (QLinearConv, QGemm …): U8S8 with per-channel symmetric int8 weights is
  // what its QDQ fusion and MLAS are built around on x86-64; per-tensor int8 also fuses.
  cpu: {
    summary: 'ORT CPU, x86-64 (default; alias cpu-x86): uint8 activations, per-channel symmetric int8 weights',
    activationTypes: ['uint8', 'int8', 'uint16'],
    activationReason: '',
    weights: (_act, pc) => same(pc === false ? S8_PER_TENSOR : S8_PER_CHANNEL),
    quantizeSoftmax: false,
  },
  // ORT fuses int8 (S8S8) QDQ natively only on ARM builds, and documents S8S8 as the default
  // that balances speed and accuracy there (dot-product kernels, no x86 U8S8 saturation).
  // Chosen from ORT's documentation: no ARM CPU is timed here.
  'cpu-arm': {
    summary: "ORT CPU, ARM64 (chosen from ORT's docs, not timed here): int8 activations (S8S8), per-channel symmetric int8 weights",
    activationTypes: ['int8', 'uint8', 'uint16'],
    activationReason: '',
    weights: (_act, pc) => same(pc === false ? S8_PER_TENSOR : S8_PER_CHANNEL),
    quantizeSoftmax: false,
  },
  // ORT's get_qnn_qdq_config: uint8 activations and weights (asymmetric, per-tensor), 16-bit
  // activations as an option, MinimumRealRange 1e-4, Relu/Clip removed. With per-channel on, only
  // Conv weights go int8 symmetric per-channel; MatMul/FullyConnected stay per-tensor. Softmax is
  // quantized so the whole classifier, head included, is one HTP graph.
  'qnn-htp': {
    summary: 'Qualcomm NPU (QNN HTP): uint8 (or uint16) activations, per-tensor asymmetric uint8 weights, ranges ≥ 1e-4, quantized Softmax',
    activationTypes: ['uint8', 'uint16'],
    activationReason: 'QNN HTP runs uint8 and uint16 quantized operators',
    weights: (_act, pc) => (pc ? { conv: S8_PER_CHANNEL, gemm: U8_PER_TENSOR } : same(U8_PER_TENSOR)),
    minRealRange: 1e-4,
    quantizeSoftmax: true,
  },
  // The ACL provider's QLinearConv takes per-tensor parameters only.
  acl: {
    summary: 'Arm Compute Library EP: uint8 activations, per-tensor symmetric int8 weights (ACL has no per-channel)',
    activationTypes: ['uint8', 'int8'],
    activationReason: 'ACL has 8-bit quantized kernels only',
    weights: (_act, pc) => (pc ? 'ACL does not support per-channel quantization' : same(S8_PER_TENSOR)),
    quantizeSoftmax: false,
  },
  // VeriSilicon NPU via TIM-VX (NXP i.MX 8M Plus): every node unit becomes an NPU op with constant
  // scales; uint8 asymmetric per-tensor is the format these NPUs were built for (int8 per-channel
  // symmetric is mapped too, hence --per-channel). The provider has no 16-bit tensors. Softmax is
  // quantized so the head does not drop back to the CPU.
  vsinpu: {
    summary: 'VeriSilicon NPU (i.MX 8M Plus, TIM-VX): uint8 activations, per-tensor asymmetric uint8 weights, quantized Softmax',
    activationTypes: ['uint8', 'int8'],
    activationReason: 'the VSINPU provider has no 16-bit tensor type',
    weights: (_act, pc) => same(pc ? S8_PER_CHANNEL : U8_PER_TENSOR),
    quantizeSoftmax: true,
  },
  // XNNPACK's QDQ kernels: qs8 per-channel (int8 activations, int8 symmetric per-channel weights),
  // qs8 (per-tensor) and qu8 (uint8 activations and weights, per-tensor). It has no U8S8 kernels.
  xnnpack: {
    summary: 'XNNPACK EP: int8 activations, per-channel symmetric int8 weights (qs8); with uint8 activations, per-tensor uint8 (qu8)',
    activationTypes: ['int8', 'uint8'],
    activationReason: 'XNNPACK has 8-bit quantized kernels only',
    weights: (act, pc) => {
      if (act === 'uint8') return pc ? 'XNNPACK has no per-channel kernels for uint8 (qu8)' : same(U8_PER_TENSOR);
      return same(pc === false ? S8_PER_TENSOR : S8_PER_CHANNEL);
    },
    quantizeSoftmax: false,
  },
};

/** The canonical name of a target or alias; undefined when unknown. */
export function canonicalTarget(name: string): TargetName | undefined {
  if ((TARGET_NAMES as readonly string[]).includes(name)) return name as TargetName;
  return TARGET_ALIASES[name];
}

/** `name  summary`, one line per target, for --help. */
export function targetHelpLines(): string[] {
  const width = Math.max(...TARGET_NAMES.map((n) => n.length));
  return TARGET_NAMES.map((n) => `${n.padEnd(width)}  ${TARGETS[n].summary}`);
}

/** Resolves a target and explicit choices into emitter settings; refuses what the target cannot run. */
export function resolveTarget(name: string, o: TargetOverrides = {}): QdqSettings {
  const target = canonicalTarget(name);
  if (!target) {
    throw new TargetOptionError(`unknown target "${name}" (${[...TARGET_NAMES, ...Object.keys(TARGET_ALIASES)].join(', ')})`);
  }
  const spec = TARGETS[target];
  const activationType = o.activationType ?? spec.activationTypes[0]!;
  if (!spec.activationTypes.includes(activationType)) {
    throw new TargetOptionError(
      `--target ${target} takes ${spec.activationTypes.join(' or ')} activations, not ${activationType}: ${spec.activationReason}`,
    );
  }
  const w = spec.weights(activationType, o.perChannel);
  if (typeof w === 'string') throw new TargetOptionError(`--target ${target} cannot take per-channel weights: ${w}`);
  let { conv, gemm } = w;
  if (o.weightType !== undefined || o.weightSymmetric !== undefined) {
    const apply = (s: WeightScheme): WeightScheme => {
      const type = o.weightType ?? s.type;
      // A signed type defaults to symmetric and an unsigned one to asymmetric, as in ORT.
      const symmetric = o.weightSymmetric ?? (o.weightType !== undefined ? type === 'int8' : s.symmetric);
      return { type, symmetric, perChannel: s.perChannel };
    };
    conv = apply(conv);
    gemm = apply(gemm);
  }
  for (const s of [conv, gemm]) {
    // ORT's per-channel QLinearConv/QGemm need one zero point for all channels: symmetric only.
    if (s.perChannel && !s.symmetric) {
      throw new TargetOptionError(`per-channel ${s.type} weights must be symmetric (one zero point for every channel)`);
    }
  }
  const minRealRange = o.minRealRange ?? spec.minRealRange;
  if (minRealRange !== undefined && !(Number.isFinite(minRealRange) && minRealRange > 0)) {
    throw new TargetOptionError(`minimum real range must be a positive number, got ${minRealRange}`);
  }
  return {
    target,
    activationType,
    weights: conv,
    gemmWeights: gemm,
    ...(minRealRange !== undefined ? { minRealRange } : {}),
    quantizeSoftmax: o.quantizeSoftmax ?? spec.quantizeSoftmax,
    keepActivations: o.keepActivations ?? false,
  };
}

/** "int8 symmetric per-channel", for reports. */
export function describeWeights(s: WeightScheme): string {
  return `${s.perChannel ? 'per-channel' : 'per-tensor'} ${s.symmetric ? 'symmetric' : 'asymmetric'} ${s.type}`;
}
