/**
 * Which calibration images are held out for the end-to-end figure. No ONNX Runtime import: the
 * daemon's main thread uses it before the quantizer (and ORT) load in the model-setup child.
 */

/** Every this-many-th image of a sorted calibration list is held out for the end-to-end figure. */
export const HOLD_OUT_EVERY = 5;

/**
 * Splits a sorted image list: every HOLD_OUT_EVERY-th image (the 5th, 10th, …) is held out, the
 * rest calibrate. Spread over the list, so a folder sorted by time or by class is sampled evenly;
 * fewer than HOLD_OUT_EVERY images: none held out.
 */
export function holdOutEvery<T>(images: readonly T[], every = HOLD_OUT_EVERY): { calibration: T[]; heldOut: T[] } {
  const calibration: T[] = [];
  const heldOut: T[] = [];
  images.forEach((x, i) => {
    (i % every === every - 1 ? heldOut : calibration).push(x);
  });
  return { calibration, heldOut };
}
