import type { Exchange } from "./exchange.ts";

/**
 * The proxy's one timer. Every open exchange (src/proxy/exchange.ts) keeps its own deadline as a
 * number; this watchdog checks them all on a coarse shared interval and aborts the ones past
 * theirs. Arming a deadline is then two field writes: no timer is scheduled, cleared or re-armed
 * per request or per chunk (a timer per stream, re-armed around every chunk, was a visible share
 * of the proxy's per-request and per-chunk cost at 1,000 concurrent streams).
 *
 * A deadline fires between its time and one tick later, never early. The tick is a tenth of the
 * shortest configured timeout, within [WATCHDOG_MIN_TICK_MS, WATCHDOG_MAX_TICK_MS]: with the
 * defaults (60 s first byte, 300 s idle) one pass per second over the open streams.
 *
 * It is also where the hard stop reaches the streams: one listener on the long-lived hard-stop
 * signal aborts every open exchange, instead of a listener per exchange on that signal (each
 * add and remove of which walks the signal's listener list: quadratic in the open streams).
 */

/** Shortest tick: tests run timeouts of a few hundred milliseconds. */
export const WATCHDOG_MIN_TICK_MS = 5;
/** Longest tick: a deadline fires at most this late. */
export const WATCHDOG_MAX_TICK_MS = 1_000;
/** The tick as a share of the shortest timeout: a timeout fires at most 10 % late. */
export const WATCHDOG_TICK_SHARE = 0.1;

export function watchdogTickMs(timeoutsMs: readonly number[]): number {
  const shortest = Math.min(...timeoutsMs.filter((ms) => ms > 0));
  if (!Number.isFinite(shortest)) return WATCHDOG_MAX_TICK_MS;
  return Math.min(WATCHDOG_MAX_TICK_MS, Math.max(WATCHDOG_MIN_TICK_MS, Math.floor(shortest * WATCHDOG_TICK_SHARE)));
}

export class Watchdog {
  private readonly live = new Set<Exchange>();
  private timer: ReturnType<typeof setInterval> | undefined;
  private readonly hardStop: AbortSignal;
  /** True once the hard stop fired: an exchange opened after it is aborted at once. */
  stopped = false;

  constructor(
    readonly tickMs: number,
    hardStop: AbortSignal,
  ) {
    this.hardStop = hardStop;
    if (hardStop.aborted) this.stopped = true;
    else hardStop.addEventListener("abort", this, { once: true });
  }

  /** Watches `ex` until remove(); the interval runs only while something is watched. */
  add(ex: Exchange): void {
    this.live.add(ex);
    if (this.timer === undefined) {
      // A shared function with the watchdog as its argument: no bound closure.
      this.timer = setInterval(Watchdog.tick, this.tickMs, this);
      // The server keeps the process alive while requests are open; the watchdog alone must not.
      this.timer.unref?.();
    }
  }

  remove(ex: Exchange): void {
    // The interval is stopped by the next tick that finds nothing to watch, not here: sequential
    // requests would otherwise start and stop it once each.
    this.live.delete(ex);
  }

  get size(): number {
    return this.live.size;
  }

  /** Whether the interval is scheduled. */
  get running(): boolean {
    return this.timer !== undefined;
  }

  /** The hard stop: abort everything still open (an EventListener object, not a closure). */
  handleEvent(): void {
    this.stopped = true;
    for (const ex of this.live) ex.abort("shutdown");
  }

  close(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    this.hardStop.removeEventListener("abort", this);
  }

  private static tick(self: Watchdog): void {
    if (self.live.size === 0) {
      clearInterval(self.timer);
      self.timer = undefined;
      return;
    }
    const now = performance.now();
    // Aborting disposes the exchange, which removes it from the set: deleting the entry being
    // visited is safe in a Set iteration.
    for (const ex of self.live) if (now >= ex.deadline) ex.expire();
  }
}
