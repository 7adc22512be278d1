/**
 * One AdaRound optimization step (adaround.ts, eqs. 21–25) as an ONNX graph run by ONNX Runtime:
 * the soft-rounded weights, the layer's output on a minibatch of patches, the reconstruction
 * gradient, the regularizer's gradient and the Adam update, all in one `session.run`. Written as
 * plain loops in TypeScript the same step cost 11–77 CPU ms on Inception-sized layers; here MLAS runs
 * the two matrix products and vectorizes the per-weight work (docs/ARCHITECTURE.md, "Models and
 * quantization").
 *
 * Layout: weight rows W [M, Kg] (M output channels, Kg weights per channel), grouped as
 * [G, M/G, Kg]; a minibatch of patches X [G, B, Kg] (each patch's group g slice); targets T [B, M].
 */
import * as ort from 'onnxruntime-node';
import { DataType, encodeModel, makeModel, makeNode, makeTensor, makeValueInfo, onnx } from '../onnx.js';

/** Stretch of the rectified sigmoid, eq. (23). */
export const ZETA = 1.1;
export const GAMMA = -0.1;
const ADAM_BETA1 = 0.9;
const ADAM_BETA2 = 0.999;
const ADAM_EPS = 1e-8;

export interface StepGeometry {
  outChannels: number;
  groups: number;
  rowLength: number;
  batch: number;
  relu: boolean;
}

export interface StepConstants {
  /** floor(w/s) + zp per weight, rows [M, Kg] */
  floorQ: ArrayLike<number>;
  /** per row (output channel) */
  rowScale: Float32Array;
  rowZero: Float32Array;
  qmin: number;
  qmax: number;
  bias?: Float32Array;
}

/** Per-step scalars: the regularizer's exponent and weight, and Adam's bias corrections. */
export interface StepScalars {
  beta: number;
  /** λ·2β during the regularized phase, 0 during the warm-up */
  regScale: number;
  learningRate: number;
  /** the step number, from 1 */
  step: number;
}

const scalar = (name: string, v: number): onnx.TensorProto => makeTensor(name, DataType.FLOAT, [], Float32Array.of(v));
const ints = (name: string, v: number[]): onnx.TensorProto => makeTensor(name, DataType.INT64, [v.length], BigInt64Array.from(v, BigInt));

/**
 * Nodes for Y [n, M] = per group g: xG[g] [n, Kg] · W[g]ᵀ, with W the weight rows [M, Kg] and xG the
 * patches group-major [G, n, Kg]; `groupedShape` = [G, M/G, Kg] and `outShape` = [n, M] are initializers.
 */
function groupedProductNodes(xG: string, w: string, y: string): onnx.NodeProto[] {
  return [
    makeNode('Reshape', [w, 'groupedShape'], [`${w}G`]),
    makeNode('Transpose', [`${w}G`], [`${w}GT`], { perm: [0, 2, 1] }),
    makeNode('MatMul', [xG, `${w}GT`], [`${y}G`]),
    makeNode('Transpose', [`${y}G`], [`${y}NG`], { perm: [1, 0, 2] }),
    makeNode('Reshape', [`${y}NG`, 'outShape'], [y]),
  ];
}

/**
 * The step graph for one block of channels: inputs V, adamM, adamV, X, T, hyper [4] and the block's
 * live, base, rowScale and bias; outputs V', adamM', adamV'.
 */
function stepModel(geo: StepGeometry): onnx.ModelProto {
  // live, base, rowScale and bias are fed with each run: one session serves every block of a layer.
  const { outChannels: M, groups: G, rowLength: Kg, batch: B } = geo;
  const Mg = M / G;
  const n = makeNode;
  const nodes: onnx.NodeProto[] = [
    // hyper = [β − 2, regScale, lr / (1 − β1^t), 1 / (1 − β2^t)]
    n('Gather', ['hyper', 'i0'], ['betaMinus2'], { axis: 0 }),
    n('Gather', ['hyper', 'i1'], ['regScale'], { axis: 0 }),
    n('Gather', ['hyper', 'i2'], ['stepSize'], { axis: 0 }),
    n('Gather', ['hyper', 'i3'], ['invC2'], { axis: 0 }),
    // eq. (23): h = clip(σ(V)(ζ − γ) + γ, 0, 1); ∂h/∂V = (ζ − γ)σ(1 − σ) where h is not clipped
    n('Sigmoid', ['V'], ['sig']),
    n('Mul', ['sig', 'zetaMinusGamma'], ['sigStretched']),
    n('Add', ['sigStretched', 'gamma'], ['stretched']),
    n('Clip', ['stretched', 'zero', 'one'], ['h']),
    n('Sub', ['one', 'sig'], ['oneMinusSig']),
    n('Mul', ['sig', 'oneMinusSig'], ['sigSlope']),
    n('Mul', ['sigSlope', 'zetaMinusGamma'], ['dhRaw']),
    n('Greater', ['stretched', 'zero'], ['hAbove0']),
    n('Less', ['stretched', 'one'], ['hBelow1']),
    n('And', ['hAbove0', 'hBelow1'], ['hInside']),
    n('Cast', ['hInside'], ['hInsideF'], { to: DataType.FLOAT }),
    n('Mul', ['dhRaw', 'hInsideF'], ['dhInside']),
    // eq. (22): W̃ = s·(clip(floor + h, qmin, qmax) − zp). Whether floor + h can leave the integer range
    // depends on floor alone (see `live`), so the clip is folded into constants: W̃ = base + h·s·live.
    n('Mul', ['dhInside', 'live'], ['dh']),
    n('Mul', ['h', 'live'], ['hLive']),
    n('Mul', ['hLive', 'rowScale'], ['hScaled']),
    n('Add', ['base', 'hScaled'], ['soft']),
    // the layer on the minibatch: Y [B, M] = X · W̃ᵀ (per group) + b
    ...groupedProductNodes('X', 'soft', 'yNoBias'),
    n('Add', ['yNoBias', 'bias'], ['y']),
    // ∂/∂y of the mean over patches of Σ_m (y − t)²: 2(y − t)/B, 0 where the folded Relu clips y
    n('Sub', ['y', 'T'], ['diff']),
    n('Mul', ['diff', 'twoOverB'], geo.relu ? ['errAll'] : ['err']),
    ...(geo.relu
      ? [
          n('Greater', ['y', 'zero'], ['yPositive']),
          n('Cast', ['yPositive'], ['yPositiveF'], { to: DataType.FLOAT }),
          n('Mul', ['errAll', 'yPositiveF'], ['err']),
        ]
      : []),
    // ∂/∂W̃ [M, Kg] = Σ_b err[b, m] · patch_b[group(m)], then the chain rule to V
    n('Reshape', ['err', 'errShape'], ['errBG']),
    n('Transpose', ['errBG'], ['errG'], { perm: [1, 2, 0] }),
    n('MatMul', ['errG', 'X'], ['gradG']),
    n('Reshape', ['gradG', 'rowsShape'], ['gradW']),
    n('Mul', ['gradW', 'rowScale'], ['gradQ']),
    n('Mul', ['gradQ', 'dh'], ['gradRec']),
    // eq. (24): ∂/∂h [1 − |2h − 1|^β] = −2β·|2h − 1|^(β−1)·sign(2h − 1) = −2β·u·|u|^(β−2), u = 2h − 1;
    // regScale carries λ·2β (0 in the warm-up). |u|^(β−2) as exp((β−2)·ln(|u| + tiny)): Pow and Sign
    // are scalar loops in ORT, Exp and Log vectorized (the tiny keeps u = 0 at β = 2 from 0·∞).
    n('Mul', ['h', 'two'], ['twoH']),
    n('Sub', ['twoH', 'one'], ['u']),
    n('Abs', ['u'], ['absU']),
    n('Add', ['absU', 'tiny'], ['absUTiny']),
    n('Log', ['absUTiny'], ['logU']),
    n('Mul', ['logU', 'betaMinus2'], ['logPow']),
    n('Exp', ['logPow'], ['powU']),
    n('Mul', ['powU', 'u'], ['regDir']),
    n('Mul', ['regDir', 'dh'], ['regDh']),
    n('Mul', ['regDh', 'regScale'], ['gradReg']),
    n('Sub', ['gradRec', 'gradReg'], ['g']),
    // Adam
    n('Mul', ['adamM', 'beta1'], ['mDecayed']),
    n('Mul', ['g', 'oneMinusBeta1'], ['mNew']),
    n('Add', ['mDecayed', 'mNew'], ['adamMOut']),
    n('Mul', ['adamV', 'beta2'], ['vDecayed']),
    n('Mul', ['g', 'g'], ['gSquared']),
    n('Mul', ['gSquared', 'oneMinusBeta2'], ['vNew']),
    n('Add', ['vDecayed', 'vNew'], ['adamVOut']),
    n('Mul', ['adamVOut', 'invC2'], ['vHat']),
    n('Sqrt', ['vHat'], ['vRoot']),
    n('Add', ['vRoot', 'eps'], ['denominator']),
    n('Div', ['adamMOut', 'denominator'], ['direction']),
    n('Mul', ['direction', 'stepSize'], ['update']),
    n('Sub', ['V', 'update'], ['VOut']),
  ];
  const initializer = [
    ints('i0', [0]),
    ints('i1', [1]),
    ints('i2', [2]),
    ints('i3', [3]),
    scalar('zetaMinusGamma', ZETA - GAMMA),
    scalar('gamma', GAMMA),
    scalar('zero', 0),
    scalar('one', 1),
    scalar('two', 2),
    scalar('tiny', 1e-30),
    scalar('twoOverB', 2 / B),
    scalar('beta1', ADAM_BETA1),
    scalar('oneMinusBeta1', 1 - ADAM_BETA1),
    scalar('beta2', ADAM_BETA2),
    scalar('oneMinusBeta2', 1 - ADAM_BETA2),
    scalar('eps', ADAM_EPS),
    ints('groupedShape', [G, Mg, Kg]),
    ints('outShape', [B, M]),
    ints('errShape', [B, G, Mg]),
    ints('rowsShape', [M, Kg]),
  ];
  const f = DataType.FLOAT;
  return makeModel({
    opset: 13,
    graph: onnx.GraphProto.create({
      name: 'adaround_step',
      node: nodes,
      initializer,
      input: [
        makeValueInfo('V', f, [M, Kg]),
        makeValueInfo('adamM', f, [M, Kg]),
        makeValueInfo('adamV', f, [M, Kg]),
        makeValueInfo('X', f, [G, B, Kg]),
        makeValueInfo('T', f, [B, M]),
        makeValueInfo('hyper', f, [4]),
        makeValueInfo('live', f, [M, Kg]),
        makeValueInfo('base', f, [M, Kg]),
        makeValueInfo('rowScale', f, [M, 1]),
        makeValueInfo('bias', f, [1, M]),
      ],
      output: [makeValueInfo('VOut', f, [M, Kg]), makeValueInfo('adamMOut', f, [M, Kg]), makeValueInfo('adamVOut', f, [M, Kg])],
    }),
  });
}

/**
 * Per weight: live = 1 where floor + h stays in [qmin, qmax] for every h in [0, 1] (floor in [qmin,
 * qmax − 1]); elsewhere W̃ is the clipped integer whatever h is, and h gets no gradient. base = W̃ at
 * h = 0: s·(clip(floor) − zp). For rows [r0, r1).
 */
function weightConstants(Kg: number, c: StepConstants, r0: number, r1: number): { live: Float32Array; base: Float32Array } {
  const count = (r1 - r0) * Kg;
  const live = new Float32Array(count);
  const base = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    const row = r0 + Math.floor(i / Kg);
    const fl = c.floorQ[r0 * Kg + i]!;
    live[i] = fl >= c.qmin && fl + 1 <= c.qmax ? 1 : 0;
    base[i] = c.rowScale[row]! * (Math.min(c.qmax, Math.max(c.qmin, fl)) - c.rowZero[row]!);
  }
  return { live, base };
}

/**
 * Weights per block, at most: the step is separable by output channel (each channel's output, error
 * and gradient need only its own weights, given the minibatch), so a layer runs as blocks of whole
 * channels (of whole groups when grouped). A block's intermediates are at most 256 KB each, which
 * bounds the step's memory whatever the layer's size.
 */
const BLOCK_WEIGHTS = 65_536;

interface Block {
  session: ort.InferenceSession;
  /** rows [r0, r1), groups [g0, g1) (one group of the block spans them all when the layer has one) */
  r0: number;
  r1: number;
  g0: number;
  g1: number;
  V: ort.Tensor;
  adamM: ort.Tensor;
  adamV: ort.Tensor;
  /** the block's columns of T, copied for each step */
  T: Float32Array;
  feeds: Record<string, ort.Tensor>;
}

/** Runs AdaRound's steps for one layer; V and Adam's moments live in the tensors passed between runs. */
export class AdaroundStepper {
  readonly #geo: StepGeometry;
  readonly #blocks: Block[];
  readonly #sessions: ort.InferenceSession[];
  readonly #hyper = new Float32Array(4);

  private constructor(geo: StepGeometry, blocks: Block[], sessions: ort.InferenceSession[]) {
    this.#geo = geo;
    this.#blocks = blocks;
    this.#sessions = sessions;
  }

  /** `V` is the starting point, rows [M, Kg]. */
  static async create(geo: StepGeometry, constants: StepConstants, V: Float32Array): Promise<AdaroundStepper> {
    const { outChannels: M, groups: G, rowLength: Kg, batch: B } = geo;
    if (M % G !== 0) throw new Error(`${M} output channels do not split into ${G} groups`);
    if (V.length !== M * Kg) throw new Error(`V has ${V.length} values, expected ${M * Kg}`);
    const Mg = M / G;
    // Blocks of whole groups (grouped layers) or of rows (one group): rows per block and groups per block.
    const groupsPerBlock = G > 1 ? Math.max(1, Math.min(G, Math.floor(BLOCK_WEIGHTS / (Mg * Kg)))) : 1;
    const rowsPerBlock = G > 1 ? groupsPerBlock * Mg : Math.max(1, Math.min(M, Math.floor(BLOCK_WEIGHTS / Kg)));
    const sessions = new Map<number, ort.InferenceSession>();
    const blocks: Block[] = [];
    try {
      for (let r0 = 0; r0 < M; r0 += rowsPerBlock) {
        const r1 = Math.min(M, r0 + rowsPerBlock);
        const rows = r1 - r0;
        const [g0, g1] = G > 1 ? [r0 / Mg, r1 / Mg] : [0, 1];
        let session = sessions.get(rows);
        if (!session) {
          session = await ort.InferenceSession.create(encodeModel(stepModel({ ...geo, outChannels: rows, groups: g1 - g0 })), {
            graphOptimizationLevel: 'all',
            executionMode: 'sequential',
            interOpNumThreads: 1,
            // Steps follow each other at once: a spinning pool would only burn the gaps between runs.
            extra: { session: { intra_op: { allow_spinning: '0' } } },
          });
          sessions.set(rows, session);
        }
        const dims = [rows, Kg];
        const { live, base } = weightConstants(Kg, constants, r0, r1);
        blocks.push({
          session,
          r0,
          r1,
          g0,
          g1,
          V: new ort.Tensor('float32', V.slice(r0 * Kg, r1 * Kg), dims),
          adamM: new ort.Tensor('float32', new Float32Array(rows * Kg), dims),
          adamV: new ort.Tensor('float32', new Float32Array(rows * Kg), dims),
          T: new Float32Array(B * rows),
          feeds: {
            live: new ort.Tensor('float32', live, dims),
            base: new ort.Tensor('float32', base, dims),
            rowScale: new ort.Tensor('float32', Float32Array.from(constants.rowScale.subarray(r0, r1)), [rows, 1]),
            bias: new ort.Tensor('float32', constants.bias ? constants.bias.slice(r0, r1) : new Float32Array(rows), [1, rows]),
          },
        });
      }
    } catch (err) {
      for (const session of sessions.values()) await session.release();
      throw err;
    }
    return new AdaroundStepper(geo, blocks, [...sessions.values()]);
  }

  /** One step on the minibatch `X` [G, B, Kg] with targets `T` [B, M]. */
  async step(X: Float32Array, T: Float32Array, s: StepScalars): Promise<void> {
    const { batch: B, rowLength: Kg, outChannels: M } = this.#geo;
    this.#hyper[0] = s.beta - 2;
    this.#hyper[1] = s.regScale;
    this.#hyper[2] = s.learningRate / (1 - ADAM_BETA1 ** s.step);
    this.#hyper[3] = 1 / (1 - ADAM_BETA2 ** s.step);
    const hyper = new ort.Tensor('float32', this.#hyper, [4]);
    for (const block of this.#blocks) {
      const rows = block.r1 - block.r0;
      for (let b = 0; b < B; b++) block.T.set(T.subarray(b * M + block.r0, b * M + block.r1), b * rows);
      const out = await block.session.run({
        V: block.V,
        adamM: block.adamM,
        adamV: block.adamV,
        X: new ort.Tensor('float32', X.subarray(block.g0 * B * Kg, block.g1 * B * Kg), [block.g1 - block.g0, B, Kg]),
        T: new ort.Tensor('float32', block.T, [B, rows]),
        hyper,
        ...block.feeds,
      });
      block.V = out.VOut as ort.Tensor;
      block.adamM = out.adamMOut as ort.Tensor;
      block.adamV = out.adamVOut as ort.Tensor;
    }
  }

  /** V after the steps so far, rows [M, Kg]. */
  get V(): Float32Array {
    const V = new Float32Array(this.#geo.outChannels * this.#geo.rowLength);
    for (const block of this.#blocks) V.set(block.V.data as Float32Array, block.r0 * this.#geo.rowLength);
    return V;
  }

  async release(): Promise<void> {
    for (const session of this.#sessions) await session.release();
  }
}

/** The mean squared output error per element of weight rows on the first patches of a pool (one ORT run). */
export class ReconstructionError {
  readonly #session: ort.InferenceSession;
  readonly #geo: Omit<StepGeometry, 'batch'>;
  readonly #count: number;

  private constructor(session: ort.InferenceSession, geo: Omit<StepGeometry, 'batch'>, count: number) {
    this.#session = session;
    this.#geo = geo;
    this.#count = count;
  }

  /** For `count` patches (rows of G·Kg values) and their targets (rows of M). */
  static async create(geo: Omit<StepGeometry, 'batch'>, count: number, bias?: Float32Array): Promise<ReconstructionError> {
    const { outChannels: M, groups: G, rowLength: Kg } = geo;
    const n = makeNode;
    const f = DataType.FLOAT;
    const nodes = [
      n('Reshape', ['X', 'patchShape'], ['xNG']),
      n('Transpose', ['xNG'], ['xG'], { perm: [1, 0, 2] }),
      ...groupedProductNodes('xG', 'W', 'yNoBias'),
      n('Add', ['yNoBias', 'bias'], geo.relu ? ['yLinear'] : ['y']),
      ...(geo.relu ? [n('Relu', ['yLinear'], ['y'])] : []),
      n('Sub', ['y', 'T'], ['diff']),
      n('ReduceSumSquare', ['diff'], ['sse'], { keepdims: 0 }),
    ];
    const model = makeModel({
      opset: 13,
      graph: onnx.GraphProto.create({
        name: 'adaround_error',
        node: nodes,
        initializer: [
          ints('patchShape', [count, G, Kg]),
          ints('groupedShape', [G, M / G, Kg]),
          ints('outShape', [count, M]),
          makeTensor('bias', f, [1, M], bias ?? new Float32Array(M)),
        ],
        input: [makeValueInfo('W', f, [M, Kg]), makeValueInfo('X', f, [count, G * Kg]), makeValueInfo('T', f, [count, M])],
        output: [makeValueInfo('sse', f, [])],
      }),
    });
    const session = await ort.InferenceSession.create(encodeModel(model), {
      graphOptimizationLevel: 'all',
      interOpNumThreads: 1,
      extra: { session: { intra_op: { allow_spinning: '0' } } },
    });
    return new ReconstructionError(session, geo, count);
  }

  /** Weight rows W [M, Kg]; `patches` and `targets` hold at least `count` rows (the first are used). */
  async measure(W: Float32Array, patches: Float32Array, targets: Float32Array): Promise<number> {
    const { outChannels: M, groups: G, rowLength: Kg } = this.#geo;
    const n = this.#count;
    const out = await this.#session.run({
      W: new ort.Tensor('float32', W, [M, Kg]),
      X: new ort.Tensor('float32', patches.subarray(0, n * G * Kg), [n, G * Kg]),
      T: new ort.Tensor('float32', targets.subarray(0, n * M), [n, M]),
    });
    return Number((out.sse as ort.Tensor).data[0]) / (n * M);
  }

  release(): Promise<void> {
    return this.#session.release();
  }
}
