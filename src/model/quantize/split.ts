/**
 * Which calibration images are held out for the end-to-end figure. No ONNX Runtime import: the
 * daemon's main thread uses it before the quantizer (and ORT) load in the model-setup child.
 */

/** Every this-many-th image of a sorted calibration list is held out for the end-to-end figure. */
export const HOLD_OUT_EVERY = 5;
/**
 * Below this many images none is held out: each one counts for the ranges. Measured on the built
 * Inception V2 with the 8 bundled samples: calibrated on 7 of them, its output SQNR over all 8 fell
 * from 13.9 to 7.7 dB (the one left out had activations beyond the 7 others' ranges).
 */
export const HOLD_OUT_MIN_IMAGES = 20;

/**
 * Splits a sorted image list: every HOLD_OUT_EVERY-th image (the 5th, 10th, …) is held out, the
 * rest calibrate. Spread over the list, so a folder sorted by time or by class is sampled evenly.
 * Fewer than HOLD_OUT_MIN_IMAGES images: none held out.
 */
export function holdOutEvery<T>(
  images: readonly T[],
  every = HOLD_OUT_EVERY,
  minimum = HOLD_OUT_MIN_IMAGES,
): { calibration: T[]; heldOut: T[] } {
  if (images.length < minimum) return { calibration: [...images], heldOut: [] };
  const calibration: T[] = [];
  const heldOut: T[] = [];
  images.forEach((x, i) => {
    (i % every === every - 1 ? heldOut : calibration).push(x);
  });
  return { calibration, heldOut };
}
