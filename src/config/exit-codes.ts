/**
 * Process exit codes of every `inceptiond` command (docs/ARCHITECTURE.md, "Source layout"). 78 is sysexits' EX_CONFIG; the systemd
 * unit lists it in RestartPreventExitStatus= because restarting cannot fix a bad configuration.
 */
export const EX_OK = 0;
export const EX_RUNTIME = 1;
export const EX_USAGE = 2;
export const EX_CONFIG = 78;

export const EXIT = {
  OK: EX_OK,
  RUNTIME: EX_RUNTIME,
  USAGE: EX_USAGE,
  CONFIG: EX_CONFIG,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];
