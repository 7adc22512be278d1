/**
 * Child process of provider-probe.ts: creates one session with one execution provider and says whether
 * it worked. Run apart from the daemon because a failing accelerator writes plain text to fd 2 (the
 * Vulkan loader, Dawn, ORT's global logger) and, for WebGPU, poisons the process: a failed adapter
 * request is cached until the process ends.
 */
import { ortReason } from './errors.js';
import { loadRuntime } from './runtime.js';
import { sessionOptionsFor } from './session-options.js';
import type { ProbeRequest, ProbeResult } from './provider-probe.js';

process.once('message', (request: ProbeRequest) => {
  void probe(request).then((result) => process.send!(result, () => process.exit(0)));
});

async function probe({ settings, provider }: ProbeRequest): Promise<ProbeResult> {
  try {
    const { ort } = loadRuntime(settings.runtime ?? '');
    const session = await ort.InferenceSession.create(settings.modelPath, sessionOptionsFor(settings, provider));
    await session.release();
    return { ok: true };
  } catch (err) {
    return { ok: false, reason: ortReason(String((err as Error)?.message ?? err)) };
  }
}
