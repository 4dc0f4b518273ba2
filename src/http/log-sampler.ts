/**
 * One warn line per refusal code per interval, however many requests a flood makes the relay
 * refuse. A capacity refusal (503 busy, storage_full, state_unavailable, ...) is the relay
 * protecting itself; writing a line for each would turn a flood of cheap requests into a flood of
 * synchronous writes on the one JS thread (and of container log volume), the very work the
 * refusal exists to avoid. Every refusal is still counted in
 * tokenplace_relay_rejections_total{reason}; the line that goes out carries how many of the same
 * code it stands for (`suppressed`: refusals since the previous line of that code).
 */

/** How often each refusal code may be logged: once a second tells an operator it is happening. */
export const REFUSAL_LOG_INTERVAL_MS = 1_000;

export interface LogSampler {
  /** undefined: skip this line; a number: write it, with that many suppressed since the last. */
  take(code: string): number | undefined;
}

export function createLogSampler(intervalMs = REFUSAL_LOG_INTERVAL_MS, now: () => number = () => performance.now()): LogSampler {
  // Codes are the relay's own constants (a bounded set), so the map cannot grow with traffic.
  const state = new Map<string, { next: number; suppressed: number }>();
  return {
    take(code) {
      const t = now();
      const s = state.get(code);
      if (s === undefined) {
        state.set(code, { next: t + intervalMs, suppressed: 0 });
        return 0;
      }
      if (t < s.next) {
        s.suppressed++;
        return undefined;
      }
      const suppressed = s.suppressed;
      s.next = t + intervalMs;
      s.suppressed = 0;
      return suppressed;
    },
  };
}
