import { describe, expect, it } from 'vitest';
import type { PublishPolicyConfig } from '../../src/config/index.js';
import { PublishPolicy, type PublishVerdict } from '../../src/daemon/publish-policy.js';
import type { ResultLabel } from '../../src/publish/index.js';

function policy(over: Partial<PublishPolicyConfig> = {}): { p: PublishPolicy; settings: PublishPolicyConfig } {
  const settings: PublishPolicyConfig = { policy: 'change', scoreDelta: 0.1, heartbeatSec: 60, maxPerSec: 0, ...over };
  return { p: new PublishPolicy(() => settings), settings };
}

function labels(label: string, score: number): ResultLabel[] {
  return [
    { index: label.length, label, score },
    { index: 999, label: 'runner-up', score: (1 - score) / 2 },
  ];
}

/** The verdicts for one Result per `stepMs`, starting at 0. */
function run(p: PublishPolicy, results: ResultLabel[][], stepMs = 1000): PublishVerdict[] {
  return results.map((l, i) => p.decide(l, i * stepMs).verdict);
}

describe('PublishPolicy', () => {
  it('every: publishes every Result', () => {
    const { p } = policy({ policy: 'every' });
    const same = labels('cat', 0.9);
    expect(run(p, [same, same, same, []])).toEqual(['publish', 'publish', 'publish', 'publish']);
  });

  it('change: alternating top labels are all published', () => {
    const { p } = policy();
    expect(run(p, [labels('cat', 0.9), labels('dog', 0.9), labels('cat', 0.9), labels('dog', 0.9)])).toEqual([
      'publish',
      'publish',
      'publish',
      'publish',
    ]);
  });

  it('change: a repeated label is published once, then on the heartbeat', () => {
    const { p } = policy({ heartbeatSec: 60 });
    const cat = labels('cat', 0.9);
    expect(p.decide(cat, 0).verdict).toBe('publish');
    expect(p.decide(cat, 1_000).verdict).toBe('unchanged');
    expect(p.decide(cat, 59_999).verdict).toBe('unchanged');
    expect(p.decide(cat, 60_000).verdict).toBe('publish');
    // The heartbeat counts from the last publish.
    expect(p.decide(cat, 119_999).verdict).toBe('unchanged');
    expect(p.decide(cat, 120_000).verdict).toBe('publish');
  });

  it('change: heartbeatSec 0 never publishes by time alone', () => {
    const { p } = policy({ heartbeatSec: 0 });
    p.decide(labels('cat', 0.9), 0);
    expect(p.decide(labels('cat', 0.9), 365 * 86_400_000).verdict).toBe('unchanged');
  });

  it('change: a score moving by more than scoreDelta from the last published one is published', () => {
    const { p } = policy({ scoreDelta: 0.1 });
    expect(p.decide(labels('cat', 0.5), 0).verdict).toBe('publish');
    expect(p.decide(labels('cat', 0.58), 1).verdict).toBe('unchanged');
    // 0.58 was not published: 0.62 is compared with 0.5, and small steps add up.
    expect(p.decide(labels('cat', 0.62), 2).verdict).toBe('publish');
    expect(p.decide(labels('cat', 0.55), 3).verdict).toBe('unchanged');
    expect(p.decide(labels('cat', 0.5), 4).verdict).toBe('publish');
  });

  it('change: no label (all below the threshold) is a top label of its own', () => {
    const { p } = policy();
    expect(run(p, [[], [], labels('cat', 0.9), [], []])).toEqual(['publish', 'unchanged', 'publish', 'publish', 'unchanged']);
  });

  it('maxPerSec: at most one publish per 1000 / maxPerSec ms', () => {
    const { p } = policy({ policy: 'every', maxPerSec: 2 });
    const cat = labels('cat', 0.9);
    // Frames every 200 ms: a publish, then nothing until 500 ms have passed since it.
    expect(run(p, Array(8).fill(cat), 200)).toEqual(['publish', 'rate', 'rate', 'publish', 'rate', 'rate', 'publish', 'rate']);
  });

  it('maxPerSec below 1: one every 1 / maxPerSec seconds', () => {
    const { p } = policy({ policy: 'every', maxPerSec: 0.2 });
    const cat = labels('cat', 0.9);
    expect(p.decide(cat, 0).verdict).toBe('publish');
    expect(p.decide(cat, 4_999).verdict).toBe('rate');
    expect(p.decide(cat, 5_000).verdict).toBe('publish');
  });

  it('change with a rate cap: unchanged wins over rate, and a held-back change goes out when the cap allows', () => {
    const { p } = policy({ maxPerSec: 1 });
    expect(p.decide(labels('cat', 0.9), 0).verdict).toBe('publish');
    expect(p.decide(labels('cat', 0.9), 100).verdict).toBe('unchanged');
    expect(p.decide(labels('dog', 0.9), 200).verdict).toBe('rate');
    expect(p.decide(labels('dog', 0.9), 1_000).verdict).toBe('publish');
    expect(p.decide(labels('dog', 0.9), 2_000).verdict).toBe('unchanged');
  });

  it('a clock that went backwards neither silences the heartbeat nor holds the rate cap', () => {
    const { p } = policy({ maxPerSec: 1 });
    const cat = labels('cat', 0.9);
    p.decide(cat, 1_000_000);
    expect(p.decide(cat, 1_000).verdict).toBe('publish');
    expect(p.decide(cat, 1_500).verdict).toBe('unchanged');
  });

  it('topChanged: the top label differs from the previous Result, published or not', () => {
    const { p } = policy({ maxPerSec: 1 });
    const seen = [
      p.decide(labels('cat', 0.9), 0),
      p.decide(labels('cat', 0.9), 100),
      p.decide(labels('dog', 0.9), 200),
      p.decide(labels('dog', 0.9), 300),
      p.decide(labels('dog', 0.9), 1_300),
      p.decide([], 1_400),
    ];
    expect(seen).toEqual([
      { verdict: 'publish', topChanged: true },
      { verdict: 'unchanged', topChanged: false },
      { verdict: 'rate', topChanged: true },
      // dog is still unpublished (so rate again), but it is no longer a change of the top label.
      { verdict: 'rate', topChanged: false },
      { verdict: 'publish', topChanged: false },
      { verdict: 'rate', topChanged: true },
    ]);
  });

  it('reads its settings on every call', () => {
    const { p, settings } = policy({ heartbeatSec: 0 });
    const cat = labels('cat', 0.9);
    expect(p.decide(cat, 0).verdict).toBe('publish');
    expect(p.decide(cat, 100).verdict).toBe('unchanged');
    settings.policy = 'every';
    expect(p.decide(cat, 200).verdict).toBe('publish');
    settings.maxPerSec = 1;
    expect(p.decide(cat, 300).verdict).toBe('rate');
    settings.maxPerSec = 0;
    expect(p.decide(cat, 400).verdict).toBe('publish');
    settings.policy = 'change';
    settings.scoreDelta = 0;
    expect(p.decide(labels('cat', 0.91), 500).verdict).toBe('publish');
  });

  it('reset: the next Result is published and counts as a change', () => {
    const { p } = policy();
    const cat = labels('cat', 0.9);
    p.decide(cat, 0);
    p.reset();
    expect(p.decide(cat, 1)).toEqual({ verdict: 'publish', topChanged: true });
  });
});
