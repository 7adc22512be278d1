/**
 * Which of a source's Results are published (the `publish` settings): every one, or on a change of the
 * top label or score, with a heartbeat; and at most `maxPerSec` of them.
 */
import type { PublishPolicyConfig } from '../config/index.js';
import type { ResultLabel } from '../publish/index.js';

/** `publish`: send it. `unchanged`: policy `change` found nothing new. `rate`: it would go out, but over `maxPerSec`. */
export type PublishVerdict = 'publish' | 'unchanged' | 'rate';

export interface PublishDecision {
  verdict: PublishVerdict;
  /**
   * The top label differs from the previous Result's (the previous one decided on, published or not;
   * true for the first). What a snapshot on change needs: a label that stays the same while Results are
   * withheld is no change, and a change withheld by the rate cap was still a change.
   */
  topChanged: boolean;
}

interface Top {
  /** undefined: no label (all below the threshold). */
  label: string | undefined;
  score: number;
}

/**
 * One per source; `decide` is called once per Result, in order, and only a `publish` verdict updates
 * what later Results are compared with (so a change held back by the rate cap is published once the cap
 * allows, if it still holds).
 *
 * The rate cap is a minimum spacing of 1000 / maxPerSec ms between publishes (0.2 → one every 5 s), not a
 * token bucket: it never lets a burst through, so "at most N per second" holds for any window. Its cost
 * is that when the frame period does not divide the spacing, fewer than N go out (5 frames/s capped at
 * 2/s publishes every third frame, 1.67/s); a cap is a ceiling, not a target.
 *
 * Settings are read through the getter on every call, so a reload applies at once. Times are in ms; a
 * clock that went backwards counts as the heartbeat and the spacing having passed, so a clock step
 * cannot silence a source.
 */
export class PublishPolicy {
  private previousTop: string | undefined;
  private hasPrevious = false;
  private published: (Top & { at: number }) | undefined;

  constructor(private readonly settings: () => PublishPolicyConfig) {}

  decide(labels: readonly ResultLabel[], now = Date.now()): PublishDecision {
    const { policy, scoreDelta, heartbeatSec, maxPerSec } = this.settings();
    const top: Top = { label: labels[0]?.label, score: labels[0]?.score ?? 0 };
    const topChanged = !this.hasPrevious || top.label !== this.previousTop;
    this.previousTop = top.label;
    this.hasPrevious = true;

    const last = this.published;
    const elapsed = last ? now - last.at : Number.POSITIVE_INFINITY;
    if (policy === 'change' && last && !(elapsed < 0)) {
      const changed =
        top.label !== last.label || Math.abs(top.score - last.score) > scoreDelta || (heartbeatSec > 0 && elapsed >= heartbeatSec * 1000);
      if (!changed) return { verdict: 'unchanged', topChanged };
    }
    if (maxPerSec > 0 && elapsed >= 0 && elapsed < 1000 / maxPerSec) return { verdict: 'rate', topChanged };
    this.published = { ...top, at: now };
    return { verdict: 'publish', topChanged };
  }

  /** Forgets what was published, so the next Result is published (e.g. after the source restarted). */
  reset(): void {
    this.published = undefined;
    this.hasPrevious = false;
  }
}
