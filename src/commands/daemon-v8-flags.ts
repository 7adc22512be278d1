// V8 flags the daemon sets itself, where it runs: `run`, and the pipeline `bench` measures. Node refuses
// both in NODE_OPTIONS, so the unit cannot set them; other commands (classify, model …) keep V8's defaults.
import v8 from 'node:v8';

/**
 * V8 lets the old generation grow to ~2-4x its live size before a full GC; at full frame rate the
 * daemon's 16-18 MB of live heap then carried up to 20 MB of garbage (heap used 22 -> 33 MB over 4000
 * Results, RSS following). At 1.2x the heap stays at 16-20 MB with no measurable cost in Results/s
 * (README "Daemon memory"). A --heap-growing-percent on Node's command line wins.
 */
function boundHeapGrowth(): void {
  if (process.execArgv.some((a) => a.startsWith('--heap-growing-percent') || a.startsWith('--heap_growing_percent'))) return;
  v8.setFlagsFromString('--heap-growing-percent=20');
}

/**
 * V8's baseline compiler (Sparkplug) keeps machine code for every function warm enough, beside the
 * bytecode and the optimized code: without it the daemon held 1-2 MB less at full frame rate (peaks
 * 148.3 and 149.9 MB over 10 000 Results against 150.2-151.2), for 0-5 % more CPU per Result in three
 * interleaved pairs (README "Daemon memory, fourth round"). A --sparkplug or --no-sparkplug on Node's command line wins.
 */
function skipBaselineCompiler(): void {
  if (process.execArgv.some((a) => /^--(no-)?sparkplug$/.test(a))) return;
  v8.setFlagsFromString('--no-sparkplug');
}

/** Both flags above: call before the daemon's code runs. */
export function applyDaemonV8Flags(): void {
  boundHeapGrowth();
  skipBaselineCompiler();
}
