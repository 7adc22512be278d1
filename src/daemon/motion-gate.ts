/**
 * Motion gating: decides from the captured bytes, before preprocessing, whether a frame is worth an
 * inference. A still camera then costs one tiny decode per frame instead of a full decode, resize and
 * inference — what matters on a 2-core board.
 *
 * The frame is reduced to a grey 64×48 thumbnail and compared with the thumbnail of the last frame that
 * was inferred (not the last frame seen: a slow drift, like daylight, accumulates until it triggers).
 */
import sharp from 'sharp';
import { DEFAULT_MAX_INPUT_PIXELS } from '../vision/index.js';
import type { MotionConfig } from '../config/index.js';

/** Thumbnail size: enough to see a person cross the frame, small enough to cost nothing to compare. */
export const MOTION_THUMB_WIDTH = 64;
export const MOTION_THUMB_HEIGHT = 48;
/** A pixel counts as changed when its grey level moves by more than this (≈ 8 % of 255): above JPEG and sensor noise. */
export const MOTION_PIXEL_DELTA = 20;

const THUMB_PIXELS = MOTION_THUMB_WIDTH * MOTION_THUMB_HEIGHT;

/** Why a frame is (not) inferred, for logs and metrics. */
export type MotionReason = 'disabled' | 'first' | 'motion' | 'interval' | 'undecodable' | 'still';

export interface MotionDecision {
  infer: boolean;
  /** Fraction (0..1) of the thumbnail's pixels that changed since the last inferred frame; 1 when nothing was compared. */
  changed: number;
  reason: MotionReason;
}

/**
 * One per source; `decide` is called once per captured frame, in order.
 *
 * Settings are read through the getter on every call, so a reload applies at once. Disabling the gate
 * drops the reference, so enabling it again starts afresh rather than comparing with an old frame.
 */
export class MotionGate {
  // Reused for every inferred frame: one allocation per source, not per frame.
  private readonly reference = new Uint8Array(THUMB_PIXELS);
  private hasReference = false;
  private lastInferredAt = 0;

  constructor(private readonly settings: () => MotionConfig) {}

  /**
   * `image` is the captured frame (usually JPEG; anything sharp decodes). When the answer is to infer,
   * this frame becomes the reference. A frame that cannot be decoded is inferred (`reason: 'undecodable'`)
   * so that preprocessing rejects it and counts it as corrupt, as it would without the gate.
   *
   * `now` is in ms; a clock that went backwards counts as the interval having passed.
   */
  async decide(image: Buffer, now = Date.now()): Promise<MotionDecision> {
    const { enabled, threshold, maxIntervalSec } = this.settings();
    if (!enabled) {
      this.hasReference = false;
      return { infer: true, changed: 1, reason: 'disabled' };
    }
    const thumb = await greyThumbnail(image);
    if (!thumb) return { infer: true, changed: 1, reason: 'undecodable' };
    if (!this.hasReference) return this.accept(thumb, now, 1, 'first');

    const ref = this.reference;
    let differing = 0;
    for (let i = 0; i < THUMB_PIXELS; i++) {
      const d = thumb[i]! - ref[i]!;
      if (d > MOTION_PIXEL_DELTA || d < -MOTION_PIXEL_DELTA) differing++;
    }
    const changed = differing / THUMB_PIXELS;
    if (changed >= threshold) return this.accept(thumb, now, changed, 'motion');
    const elapsed = now - this.lastInferredAt;
    if (maxIntervalSec > 0 && (elapsed >= maxIntervalSec * 1000 || elapsed < 0)) return this.accept(thumb, now, changed, 'interval');
    return { infer: false, changed, reason: 'still' };
  }

  /**
   * Forgets the reference, so the next frame is inferred. For when the inferred frame produced no Result
   * (the inference failed) or the source restarted: comparing with it would gate frames nobody saw.
   */
  reset(): void {
    this.hasReference = false;
  }

  private accept(thumb: Buffer, now: number, changed: number, reason: MotionReason): MotionDecision {
    this.reference.set(thumb);
    this.hasReference = true;
    this.lastInferredAt = now;
    return { infer: true, changed, reason };
  }
}

/**
 * The frame as a grey 64×48 thumbnail (one byte per pixel), or undefined when it cannot be decoded.
 *
 * Cheap on purpose: with only a resize before it, sharp decodes a JPEG with libjpeg's shrink-on-load
 * (1/2, 1/4 or 1/8 of the size, so a 1080p frame is decoded as 240×135 without its full-size pixels ever
 * existing). Anything that runs before the resize (autoOrient/rotate, a pipeline colourspace, gamma)
 * would disable that, and orientation does not matter when a frame is compared with the same camera's.
 * The pixel limit and failOn 'error' as in preprocessing (a bomb is not decoded here either): a truncated frame is refused here too, and so reaches the
 * preprocessor, which counts it as corrupt.
 */
async function greyThumbnail(image: Buffer): Promise<Buffer | undefined> {
  if (!Buffer.isBuffer(image) || image.length === 0) return undefined;
  try {
    const { data, info } = await sharp(image, { failOn: 'error', sequentialRead: true, limitInputPixels: DEFAULT_MAX_INPUT_PIXELS })
      .resize(MOTION_THUMB_WIDTH, MOTION_THUMB_HEIGHT, { fit: 'fill', kernel: 'linear' })
      .greyscale()
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 1 || data.length !== THUMB_PIXELS) return undefined;
    return data;
  } catch {
    // Deliberately not reported: preprocessing decodes the same bytes and reports the error.
    return undefined;
  }
}
