/** The frame could not be decoded: corrupt, truncated, empty or an unsupported format. Skip it. */
export class FrameDecodeError extends Error {
  override readonly name = 'FrameDecodeError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The frame has more pixels than allowed; rejected before decoding so it cannot exhaust memory. */
export class FrameTooLargeError extends Error {
  override readonly name = 'FrameTooLargeError';
  constructor(
    readonly pixels: number,
    readonly maxPixels: number,
  ) {
    super(`frame has ${pixels} pixels, more than the limit of ${maxPixels}`);
  }
}
