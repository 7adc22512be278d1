/** Rounded to 2 decimals: milliseconds and rates in logs, metrics and reports carry no more. */
export function round2(x: number): number {
  return Math.round(x * 100) / 100;
}
