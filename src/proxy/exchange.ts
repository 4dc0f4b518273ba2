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
  /** The signals this exchange listens to, with the failure each one means (see handleEvent). */
  private linked: [AbortSignal, FailureKind][] | undefined = [];
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
    const linked = this.linked;
    this.linked = undefined;
    if (linked) for (const [source] of linked) source.removeEventListener("abort", this);
  }

  /**
   * The listener of the linked signals: the exchange itself (an EventListener object), not a
   * closure per signal, because every open stream holds one exchange for as long as it runs.
   */
  handleEvent(event: Event): void {
    const hit = this.linked?.find(([source]) => source === event.target);
    if (hit) this.abort(hit[1]);
  }

  private schedule(now: number): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timerAt = this.deadline;
    // A shared function with the exchange as its argument: no bound closure per exchange.
    this.timer = setTimeout(Exchange.check, Math.max(0, this.deadline - now), this);
  }

  private static check(self: Exchange): void {
    self.timer = undefined;
    self.timerAt = Number.POSITIVE_INFINITY;
    if (self.deadline === Number.POSITIVE_INFINITY) return;
    const now = performance.now();
    if (now >= self.deadline) self.abort(self.kind);
    else self.schedule(now);
  }

  private link(source: AbortSignal, kind: FailureKind): void {
    if (source.aborted) {
      this.abort(kind);
      return;
    }
    this.linked?.push([source, kind]);
    source.addEventListener("abort", this, { once: true });
  }
}
