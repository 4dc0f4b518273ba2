/**
 * Shutdown state shared by readiness, long-polls and streams: one signal that aborts when the
 * relay starts draining (held requests answer at once) and one when the grace period is over
 * (whatever is still streaming is cut).
 */
export class Lifecycle {
  private readonly drain = new AbortController();
  private readonly hard = new AbortController();

  get draining(): boolean {
    return this.drain.signal.aborted;
  }
  get drainSignal(): AbortSignal {
    return this.drain.signal;
  }
  get hardStopSignal(): AbortSignal {
    return this.hard.signal;
  }
  beginDrain(): void {
    this.drain.abort();
  }
  hardStop(): void {
    this.drain.abort();
    this.hard.abort();
  }
}
