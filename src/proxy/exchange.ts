import { ProxyAbort, type FailureKind } from "./failure.ts";
import type { Watchdog } from "./watchdog.ts";

/**
 * One upstream attempt's cancellation: a single AbortController passed to fetch, aborted by
 * whichever comes first of the client disconnecting (req.signal), the relay's hard stop, or one
 * of the proxy's own watchdogs. fetch runs with `timeout: false` (Bun's hidden ~300 s socket
 * inactivity timeout would otherwise kill quiet SSE streams, PR oven-sh/bun#6217), so these
 * watchdogs are the only timers: first byte (until the response head) and idle (between chunks).
 *
 * The deadline is a number the shared watchdog (src/proxy/watchdog.ts) compares against the
 * clock on its tick; arm() and disarm() only move it. A stream re-arms twice per chunk, so they
 * must cost no more than a clock read and two field writes.
 */
export class Exchange {
  private readonly controller = new AbortController();
  private readonly watchdog: Watchdog;
  /** When the watchdog aborts this exchange (performance.now()), or never. */
  deadline = Number.POSITIVE_INFINITY;
  /** What a passed deadline means (see arm()). */
  private kind: FailureKind = "timeout";
  /** Mirrors controller.signal.aborted without a native getter call per chunk. */
  aborted = false;
  private disposed = false;
  /** Set once the response head arrived: from then on only the response side runs the watchdog. */
  headReceived = false;

  constructor(client: AbortSignal, watchdog: Watchdog) {
    this.watchdog = watchdog;
    if (client.aborted) this.abort("client_abort");
    else if (watchdog.stopped) this.abort("shutdown");
    if (this.aborted) return;
    // The exchange itself is the listener (an EventListener object), not a closure per request.
    // It is not removed again: the request's signal lives no longer than the request, and a
    // disposed exchange ignores it.
    client.addEventListener("abort", this, { once: true });
    watchdog.add(this);
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Why this exchange was aborted, if it was. */
  get reason(): FailureKind | undefined {
    const r: unknown = this.controller.signal.reason;
    return this.aborted && r instanceof ProxyAbort ? r.kind : undefined;
  }

  abort(kind: FailureKind): void {
    if (this.aborted) return;
    this.aborted = true;
    this.deadline = Number.POSITIVE_INFINITY;
    this.controller.abort(new ProxyAbort(kind));
  }

  /** (Re)start the watchdog: abort with `kind` unless disarmed or re-armed within `ms`. */
  arm(ms: number, kind: FailureKind): void {
    if (this.aborted) return;
    this.deadline = performance.now() + ms;
    this.kind = kind;
  }

  disarm(): void {
    this.deadline = Number.POSITIVE_INFINITY;
  }

  /** Called by the watchdog once the deadline has passed. */
  expire(): void {
    this.abort(this.kind);
  }

  /** Leave the watchdog; a later client disconnect is ignored. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.deadline = Number.POSITIVE_INFINITY;
    this.watchdog.remove(this);
  }

  /** The client's request signal fired (the client went away). */
  handleEvent(): void {
    if (!this.disposed) this.abort("client_abort");
  }
}
