// Maps one configured source to the capture module's options (capture/ knows nothing of convict).
import type { Config, SourceConfig } from './config/index.js';
import type { SourceOptions } from './capture/index.js';

export function toSourceOptions(source: SourceConfig, config: Config): SourceOptions {
  const common = { id: source.id, intervalMs: source.intervalMs };
  switch (source.backend) {
    case 'files':
      return { ...common, backend: 'files', path: source.files.path, loop: source.files.loop };
    case 'webcam':
      return {
        ...common,
        backend: 'webcam',
        device: source.webcam.device,
        width: source.webcam.width,
        height: source.webcam.height,
        skipFrames: source.webcam.skipFrames,
        jpegQuality: source.webcam.jpegQuality,
        timeoutMs: source.webcam.timeoutMs,
        tmpDir: config.runtimeDir,
      };
    case 'ffmpeg':
      return {
        ...common,
        backend: 'ffmpeg',
        input: source.ffmpeg.input,
        inputFormat: source.ffmpeg.inputFormat || undefined,
        width: source.ffmpeg.width || undefined,
        height: source.ffmpeg.height || undefined,
        fps: source.ffmpeg.fps || undefined,
        stallTimeoutMs: source.ffmpeg.stallTimeoutMs,
        extraInputArgs: source.ffmpeg.extraInputArgs,
        ffmpegPath: source.ffmpeg.path || undefined,
      };
  }
}
