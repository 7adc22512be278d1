/**
 * "One line per interval per key" for problems that repeat (per frame, per reconnect attempt, per
 * downloaded chunk): the first occurrence is logged, the rest at most once per interval, so a long
 * outage neither floods the journal nor goes silent.
 */
export class LogThrottle {
  private readonly last = new Map<string, number>();

  constructor(
    readonly intervalMs: number,
    // Date.now looked up per call, so fake timers installed after construction apply.
    private readonly now: () => number = () => Date.now(),
  ) {}

  /** True when `key` was never logged or its last line is at least intervalMs old; then counts it as logged now. */
  shouldLog(key: string): boolean {
    const now = this.now();
    const prev = this.last.get(key);
    if (prev !== undefined && now - prev < this.intervalMs) return false;
    this.last.set(key, now);
    return true;
  }

  /** Counts `key` as logged now without logging: its first line waits a whole interval. */
  mark(key: string): void {
    this.last.set(key, this.now());
  }

  /** Forgets `key`: its next occurrence is logged (a new outage starts). */
  reset(key: string): void {
    this.last.delete(key);
  }
}
