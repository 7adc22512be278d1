/**
 * The daemon's event bus: the source pipelines, the status and the publisher announce what happened;
 * features and the status listen. Typed, so a listener cannot misread a payload.
 */
import { EventEmitter } from 'node:events';
import type { Config } from '../config/index.js';
import type { ResultPayload } from '../publish/index.js';

export type DaemonState = 'starting' | 'online' | 'degraded' | 'stopped';
/** A source is `finished` when a non-looping files source has delivered its last frame. */
export type SourceState = 'online' | 'degraded' | 'finished';

export interface DaemonEvents {
  /** A frame was captured (before preprocessing). */
  frame: [{ source: string; captureSeq: number; capturedAt: Date }];
  /** A capture failed and will be retried, or the source cannot start: handled, but the source is degraded. */
  captureFailed: [{ source: string; error: string; failures: number }];
  /** The first frame after failures. */
  captureRecovered: [{ source: string }];
  /**
   * A frame was skipped (not an image, or inference failed for it), or `count` frames were (stale: the
   * source replaced them with a newer one before the pipeline took them). `count` absent = 1.
   */
  frameSkipped: [{ source: string; reason: 'corrupt' | 'inference' | 'stale'; error: string; count?: number }];
  /** A finite source delivered its last frame. */
  sourceFinished: [{ source: string }];
  /** An inference completed (ok) or failed. */
  inference: [{ source: string; ok: boolean; error?: string }];
  /** A Result was handed to the outbox. */
  result: [{ source: string; result: ResultPayload }];
  /** A Result was not published: the publish policy found nothing new, or the rate cap was reached. */
  resultSuppressed: [{ source: string; reason: 'unchanged' | 'rate' }];
  /** Motion gating skipped the inference of a frame (it stayed like the last inferred one). */
  frameGated: [{ source: string }];
  /** A source was paused or resumed (by request). */
  sourcePaused: [{ source: string; paused: boolean }];
  /** The status changed: its state, its error or a source's availability. */
  statusChanged: [{ state: DaemonState; error?: string }];
  mqttConnection: [{ connected: boolean }];
  /** A new configuration is in effect (live keys applied; `restartNeeded` keys wait for a restart). */
  reloaded: [{ config: Config; applied: string[]; restartNeeded: string[] }];
}

export class DaemonEventBus extends EventEmitter<DaemonEvents> {
  constructor() {
    super();
    // Features and sources subscribe as they start; there is no leak to warn about.
    this.setMaxListeners(0);
  }
}
