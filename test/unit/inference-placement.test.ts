import { describe, expect, it } from 'vitest';
import { ortReason } from '../../src/inference/errors.js';
import { formatPlacement, placementFromProfile } from '../../src/inference/placement.js';
import { sessionOptionsFor } from '../../src/inference/session-options.js';
import type { SessionSettings } from '../../src/inference/index.js';

/** A node event as ORT's profiler writes it (one per node per run). */
const node = (index: number, op: string, provider: string) => ({
  cat: 'Node',
  name: `n${index}_kernel_time`,
  args: { node_index: String(index), op_name: op, provider },
});

describe('placementFromProfile', () => {
  it('counts each node once per provider, copies apart, and lists the op types left to the CPU', () => {
    const run = [
      node(0, 'DequantizeLinear', 'WebGpuExecutionProvider'),
      node(1, 'Conv', 'WebGpuExecutionProvider'),
      node(2, 'MemcpyToHost', 'CPUExecutionProvider'),
      node(3, 'QuantizeLinear', 'CPUExecutionProvider'),
      node(4, 'MemcpyFromHost', 'WebGpuExecutionProvider'),
      node(5, 'QuantizeLinear', 'CPUExecutionProvider'),
    ];
    const events = [
      { cat: 'Session', name: 'model_loading_uri' },
      ...run,
      ...run, // a second run repeats every node
      { cat: 'Node', name: 'n1_fence_before', args: { provider: 'WebGpuExecutionProvider', op_name: 'Conv' } },
    ];
    const p = placementFromProfile(events);
    expect(p).toEqual({ nodes: { webgpu: 2, cpu: 2 }, cpuOps: { QuantizeLinear: 2 }, copies: 2 });
    expect(formatPlacement(p)).toBe('webgpu 2, cpu 2; on cpu: QuantizeLinear 2; 2 copies per run');
  });

  it('reports no CPU op list when one provider runs the whole graph', () => {
    const p = placementFromProfile([node(0, 'Conv', 'CPUExecutionProvider'), node(1, 'Relu', 'CPUExecutionProvider')]);
    expect(p).toEqual({ nodes: { cpu: 2 }, cpuOps: {}, copies: 0 });
    expect(formatPlacement(p)).toBe('cpu 2');
  });
});

describe('ortReason', () => {
  it('keeps what the user needs from a native error', () => {
    expect(
      ortReason(
        '/onnxruntime_src/onnxruntime/core/providers/webgpu/webgpu_context.cc:136 onnxruntime::webgpu::WebGpuContext::Initialize(const onnxruntime::webgpu::WebGpuContextConfig&)::<lambda()> adapter_result.status == wgpu::RequestAdapterStatus::Success was false. Failed to get a WebGPU adapter: No supported adapters\n',
      ),
    ).toBe('Failed to get a WebGPU adapter: No supported adapters');
    expect(ortReason("Invalid argument: WebGPU EP has an unrecognized option: 'foo'.")).toBe(
      "Invalid argument: WebGPU EP has an unrecognized option: 'foo'.",
    );
  });
});

describe('sessionOptionsFor', () => {
  const base: SessionSettings = {
    modelPath: 'm.onnx',
    executionProviders: ['webgpu', 'cpu'],
    threads: 2,
    allowSpinning: false,
    graphOptimizationLevel: 'all',
  };
  const session = (o: ReturnType<typeof sessionOptionsFor>) => (o.extra as { session: Record<string, unknown> }).session;

  it('passes provider options through as the binding takes them: numbers as text, lists as lists', () => {
    const o = sessionOptionsFor(
      { ...base, providerOptions: { webgpu: { preferredLayout: 'NCHW', forceCpuNodeNames: ['a', 'b'], n: 3 } } },
      'webgpu',
    );
    expect(o.executionProviders).toEqual([{ name: 'webgpu', preferredLayout: 'NCHW', forceCpuNodeNames: ['a', 'b'], n: '3' }]);
    expect(sessionOptionsFor(base, 'cpu').executionProviders).toEqual(['cpu']);
  });

  it('lets an accelerator leave nodes to the CPU unless cpuFallback is false; never constrains the CPU itself', () => {
    expect(session(sessionOptionsFor(base, 'webgpu')).disable_cpu_ep_fallback).toBeUndefined();
    expect(session(sessionOptionsFor({ ...base, cpuFallback: false }, 'webgpu')).disable_cpu_ep_fallback).toBe('1');
    expect(session(sessionOptionsFor({ ...base, cpuFallback: false }, 'cpu')).disable_cpu_ep_fallback).toBeUndefined();
  });

  it('asks for a profile and an embedded EP context file when told to', () => {
    const o = sessionOptionsFor(base, 'qnn', { profileFilePrefix: '/tmp/p/warmup', epContextFile: '/c/m_ctx.onnx' });
    expect(o).toMatchObject({ enableProfiling: true, profileFilePrefix: '/tmp/p/warmup' });
    expect((o.extra as { ep: unknown }).ep).toEqual({ context_enable: '1', context_file_path: '/c/m_ctx.onnx', context_embed_mode: '1' });
    expect(sessionOptionsFor(base, 'qnn')).not.toHaveProperty('enableProfiling');
  });
});
