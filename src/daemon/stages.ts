/**
 * A source's stages around inference, built from its settings (read per frame, so a reload applies at
 * once): motion gating before preprocessing, the publish policy after the labels.
 */
import type { SourceConfig } from '../config/index.js';
import { MotionGate } from './motion-gate.js';
import { PublishPolicy } from './publish-policy.js';
import type { PipelineDeps } from './source-pipeline.js';

export function sourceStages(settings: () => SourceConfig): Pick<PipelineDeps, 'gate' | 'policy' | 'regate'> {
  const gate = new MotionGate(() => settings().motion);
  const policy = new PublishPolicy(() => settings().publish);
  return {
    gate: async (image) => (await gate.decide(image)).infer,
    policy: (labels) => policy.decide(labels).verdict,
    regate: () => gate.reset(),
  };
}
