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
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly unlink: Array<() => void> = [];
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
    this.disarm();
    if (this.controller.signal.aborted) return;
    this.timer = setTimeout(() => this.abort(kind), ms);
  }

  disarm(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Stop timers and detach from long-lived signals (the hard-stop signal outlives every request). */
  dispose(): void {
    this.disarm();
    for (const off of this.unlink.splice(0)) off();
  }

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
