import type { Logger } from 'pino';
import { FfmpegSource } from './ffmpeg-source.js';
import { FilesSource } from './files-source.js';
import type { FrameSource, SourceOptions } from './types.js';
import { WebcamSource } from './webcam-source.js';

/** The FrameSource for `options.backend`; throws a TypeError for invalid options. */
export function createSource(options: SourceOptions, logger: Logger): FrameSource {
  switch (options.backend) {
    case 'files':
      return new FilesSource(options, logger);
    case 'webcam':
      return new WebcamSource(options, logger);
    case 'ffmpeg':
      return new FfmpegSource(options, logger);
    default: {
      const backend: unknown = (options as { backend?: unknown }).backend;
      throw new TypeError(`unknown capture backend ${JSON.stringify(backend)} (expected webcam, ffmpeg or files)`);
    }
  }
}
