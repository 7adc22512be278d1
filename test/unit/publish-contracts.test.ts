import { describe, expect, it } from 'vitest';
import { buildResult, PayloadError, validateResult, type ResultInput } from '../../src/publish/payload.js';
import { defaultBaseTopic, TopicError, topicsFor } from '../../src/publish/topics.js';

describe('topics', () => {
  it('lays out the contract topics under the base', () => {
    const t = topicsFor(defaultBaseTopic('edge-1'));
    expect(t.status).toBe('inceptiond/edge-1/status');
    expect(t.labels('camera')).toBe('inceptiond/edge-1/camera/labels');
    expect(t.snapshot('door')).toBe('inceptiond/edge-1/door/snapshot');
    expect(t.metrics).toBe('inceptiond/edge-1/metrics');
    expect(t.requestWildcard).toBe('inceptiond/edge-1/request/+');
    expect(t.response('status')).toBe('inceptiond/edge-1/response/status');
    expect(t.requestOp('inceptiond/edge-1/request/status')).toBe('status');
    expect(t.requestOp('inceptiond/edge-1/response/status')).toBeNull();
    expect(t.requestOp('inceptiond/edge-1/request/a/b')).toBeNull();
  });

  it.each(['', 'a//b', '/a', 'a/', 'a/+/b', 'a/#', 'a\u0000b', '$SYS/x'])('rejects the base topic %j', (base) => {
    expect(() => topicsFor(base)).toThrow(TopicError);
  });

  it.each(['', 'a/b', '+', 'cam#', 'x\u0000', 'request', 'response'])('rejects the source id %j', (id) => {
    expect(() => topicsFor('base').labels(id)).toThrow(TopicError);
  });

  it('rejects a device id that is not one topic level', () => {
    expect(() => defaultBaseTopic('a/b')).toThrow(/deviceId/);
  });
});

const input = (): ResultInput => ({
  seq: 1234,
  ts: '2026-11-28T05:03:14.123Z',
  source: 'camera',
  frame: { capturedAt: new Date('2026-11-28T05:03:14.101Z'), width: 640, height: 480 },
  model: { name: 'inception-v2', precision: 'int8' },
  provider: 'cpu',
  labels: [
    { index: 207, label: 'golden retriever', score: 0.83 },
    { index: 208, label: 'Labrador retriever', score: 0.1 },
  ],
  latencyMs: { preprocess: 2.0, inference: 11.2, total: 17.0 },
});

describe('Result payload', () => {
  it('builds exactly the contract example shape', () => {
    expect(JSON.parse(JSON.stringify(buildResult(input())))).toEqual({
      seq: 1234,
      ts: '2026-11-28T05:03:14.123Z',
      source: 'camera',
      frame: { capturedAt: '2026-11-28T05:03:14.101Z', width: 640, height: 480 },
      model: { name: 'inception-v2', precision: 'int8' },
      provider: 'cpu',
      labels: [
        { index: 207, label: 'golden retriever', score: 0.83 },
        { index: 208, label: 'Labrador retriever', score: 0.1 },
      ],
      latencyMs: { preprocess: 2, inference: 11.2, total: 17 },
    });
  });

  it('refuses to build a Result that breaks the contract', () => {
    expect(() => buildResult({ ...input(), labels: [{ index: 1, label: 'x', score: 1.5 }] })).toThrow(PayloadError);
    expect(() => buildResult({ ...input(), frame: { capturedAt: 'yesterday', width: 1, height: 1 } })).toThrow(/capturedAt/);
  });

  /** A Result as parsed JSON, to be broken on purpose. */
  type Mutable = Record<string, unknown> & {
    labels: Array<{ score: number }>;
    latencyMs: { total: number };
    model: { precision: string };
    frame: { width: number };
  };
  it.each([
    ['a missing field', (r: Record<string, unknown>) => delete r.provider, /missing "provider"/],
    ['an extra field', (r: Record<string, unknown>) => (r.extra = 1), /unknown field "extra"/],
    ['a fractional seq', (r: Record<string, unknown>) => (r.seq = 1.5), /seq/],
    ['a local timestamp', (r: Record<string, unknown>) => (r.ts = '2026-11-28T05:03:14+01:00'), /ts must be/],
    ['a score above 1', (r: Mutable) => (r.labels[0]!.score = 1.01), /score/],
    ['unsorted labels', (r: Mutable) => r.labels.reverse(), /sorted/],
    ['a negative latency', (r: Mutable) => (r.latencyMs.total = -1), /latencyMs.total/],
    ['an unknown precision', (r: Mutable) => (r.model.precision = 'int4'), /precision/],
    ['a zero width', (r: Mutable) => (r.frame.width = 0), /frame.width/],
  ])('validateResult reports %s', (_what, mutate, message) => {
    const r = JSON.parse(JSON.stringify(buildResult(input())));
    expect(validateResult(r)).toMatchObject({ ok: true });
    mutate(r);
    const check = validateResult(r);
    expect(check.ok).toBe(false);
    if (!check.ok) expect(check.errors.join('\n')).toMatch(message);
  });

  it('validateResult rejects non-objects without throwing', () => {
    for (const value of [null, 42, 'x', [1]]) expect(validateResult(value).ok).toBe(false);
  });
});
