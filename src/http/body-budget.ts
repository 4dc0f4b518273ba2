import { RelayError } from "../errors.ts";

/**
 * The bytes of request bodies being read at once, over every request of one relay. A body with a
 * declared Content-Length reserves its whole size before a byte is read (so a hostile client that
 * declares 4 MiB and trickles holds its share for the whole trickle), a chunked body reserves each
 * chunk as it arrives; everything is given back once the body has been read and parsed.
 */
/** A body at least this large is reported to the budget's observer as it is reserved and released. */
export const LARGE_BODY_BYTES = 1024 * 1024;

export class BodyBudget {
  private used = 0;
  private observer: (() => void) | undefined;

  constructor(readonly capacity: number) {}

  /**
   * Called as each large body is reserved and released: the memory guard samples RSS then, since
   * one such body moves it by several times its size within a sampling interval.
   */
  onLargeBody(observer: () => void): void {
    this.observer = observer;
  }

  get inUse(): number {
    return this.used;
  }

  /** Reserves `n` bytes if they fit; false (and nothing reserved) otherwise. */
  tryReserve(n: number): boolean {
    if (n <= 0) return true;
    if (this.used + n > this.capacity) return false;
    this.used += n;
    if (n >= LARGE_BODY_BYTES) this.observer?.();
    return true;
  }

  release(n: number): void {
    this.used = Math.max(0, this.used - n);
    if (n >= LARGE_BODY_BYTES) this.observer?.();
  }
}

/** How the body of one request may be read: attached by the app when the request is admitted. */
export interface BodyPolicy {
  budget: BodyBudget;
  /** performance.now() by which the whole body must have arrived. */
  deadline: number;
  timeoutMs: number;
}

// A WeakMap keyed by the Request: every route's reader finds its relay's policy without the
// handlers passing it along, and the entry goes away with the request.
const policies = new WeakMap<Request, BodyPolicy>();

export function attachBodyPolicy(req: Request, policy: BodyPolicy): void {
  policies.set(req, policy);
}

/** undefined for a request the app did not admit (unit tests calling handlers directly): no bounds. */
export function bodyPolicy(req: Request): BodyPolicy | undefined {
  return policies.get(req);
}

/**
 * The refusals that leave the request's body unread carry `Connection: close`: otherwise Bun keeps
 * the connection and reads (and discards) whatever the client goes on sending.
 */
export const CLOSE = { Connection: "close" } as const;

/** Retry-After of a busy relay: a second is enough for bodies being read or requests ending. */
export const BUSY_RETRY_AFTER_SECONDS = 1;

/**
 * 503 with the body type "busy" (every capacity refusal of the relay shares it, so clients need to
 * know one code) and Retry-After; `reason` and the metric label say which capacity was full.
 */
export function busy(reason: string, message: string): RelayError {
  return new RelayError(503, `busy_${reason}`, message, { error: { message, code: 503, type: "busy", reason } }, {
    ...CLOSE,
    "Retry-After": String(BUSY_RETRY_AFTER_SECONDS),
  });
}

export const bodyBudgetFull = () => busy("body_bytes", "The relay is reading as many request bodies as it may; retry shortly");

export const bodyTimeout = (timeoutMs: number) =>
  new RelayError(408, "body_timeout", `The request body did not arrive within ${timeoutMs} ms`, undefined, CLOSE);
