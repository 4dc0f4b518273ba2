import { ProxyAbort, type FailureKind } from "./failure.ts";

/**
 * One upstream attempt's cancellation: a single AbortController passed to fetch, aborted by
 * whichever comes first of the client disconnecting (req.signal), the relay's hard stop, or one
 * of the proxy's own watchdogs. fetch runs with `timeout: false` (Bun's hidden ~300 s socket
 * inactivity timeout would otherwise kill quiet SSE streams, PR oven-sh/bun#6217), so these
 * watchdogs are the only timers: first byte (until the response head) and idle (between chunks).
 */
export class Exchange {
  private readonly controller = new AbortController();
  private readonly unlink: Array<() => void> = [];
  /**
   * The watchdog is lazy: arm() and disarm() only move `deadline`; one timer at a time checks it
   * when it fires and, if the deadline moved on, sleeps again until the new one. A stream re-arms
   * twice per chunk, and clearing and scheduling a timer each time was a visible share of the
   * proxy's per-chunk cost.
   */
  private deadline = Number.POSITIVE_INFINITY;
  private kind: FailureKind = "timeout";
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** When the pending timer fires (performance.now()). */
  private timerAt = Number.POSITIVE_INFINITY;
  /** Set once the response head arrived: from then on only the response side runs the watchdog. */
  headReceived = false;

  constructor(client: AbortSignal, hardStop: AbortSignal) {
    this.link(client, "client_abort");
    this.link(hardStop, "shutdown");
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Why this exchange was aborted, if it was. */
  get reason(): FailureKind | undefined {
    const r: unknown = this.controller.signal.reason;
    return this.controller.signal.aborted && r instanceof ProxyAbort ? r.kind : undefined;
  }

  abort(kind: FailureKind): void {
    if (this.controller.signal.aborted) return;
    this.disarm();
    this.controller.abort(new ProxyAbort(kind));
  }

  /** (Re)start the single watchdog: abort with `kind` unless disarmed within `ms`. */
  arm(ms: number, kind: FailureKind): void {
    if (this.controller.signal.aborted) return;
    const now = performance.now();
    this.deadline = now + ms;
    this.kind = kind;
    // A timer due no later than the new deadline re-checks then; only a later one is replaced.
    if (this.timer === undefined || this.timerAt > this.deadline) this.schedule(now);
  }

  disarm(): void {
    // The pending timer, if any, finds no deadline and stops; dispose() clears it for good.
    this.deadline = Number.POSITIVE_INFINITY;
  }

  /** Stop timers and detach from long-lived signals (the hard-stop signal outlives every request). */
  dispose(): void {
    this.disarm();
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    for (const off of this.unlink.splice(0)) off();
  }

  private schedule(now: number): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timerAt = this.deadline;
    this.timer = setTimeout(this.check, Math.max(0, this.deadline - now));
  }

  private readonly check = (): void => {
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    if (this.deadline === Number.POSITIVE_INFINITY) return;
    const now = performance.now();
    if (now >= this.deadline) this.abort(this.kind);
    else this.schedule(now);
  };

  private link(source: AbortSignal, kind: FailureKind): void {
    if (source.aborted) {
      this.abort(kind);
      return;
    }
    const onAbort = () => this.abort(kind);
    source.addEventListener("abort", onAbort, { once: true });
    this.unlink.push(() => source.removeEventListener("abort", onAbort));
  }
}
