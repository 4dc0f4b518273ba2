import { BUN_MAX_IDLE_TIMEOUT_SECONDS } from "./context.ts";
import * as D from "../config/defaults.ts";
import { RelayError } from "../errors.ts";

/**
 * The bytes of request bodies being read at once, over every request of one relay. A body with a
 * declared Content-Length reserves its whole size before a byte is read (so a hostile client that
 * declares 4 MiB and trickles holds its share for the whole trickle), a chunked body reserves each
 * chunk as it arrives; everything is given back once the body has been read and parsed.
 *
 * Bodies of at most D.BODY_BUDGET_SMALL_BYTES reserve nothing and are never refused (the readers
 * in src/http/json.ts skip the budget for them). Of the rest, client routes may take the pool but
 * its node share (D.BODY_BUDGET_NODE_SHARE) and one client address at most its address share
 * (D.BODY_BUDGET_ADDRESS_SHARE): five slow 4 MiB uploads from one address used to hold the whole
 * pool for a minute, every node answer and register refused meanwhile. Declared lengths are still
 * reserved whole, not as bytes arrive: the per-address share bounds what one trickler holds and
 * the body deadline how long, while one read of the declared body is several times cheaper than
 * pumping a reader.
 */
/** A body at least this large makes the memory guard sample RSS as it is reserved and released. */
export const LARGE_BODY_BYTES = 1024 * 1024;

export class BodyBudget {
  private used = 0;
  private observer: ((n: number) => void) | undefined;
  /** Bytes reserved per client address (client routes only); an address leaves at 0. */
  private readonly perAddress = new Map<string, number>();
  /** Most one client address may hold reserved. */
  readonly addressCapacity: number;
  /** Most client routes may hold reserved together: the rest is the node routes' share. */
  readonly clientCapacity: number;

  /** `maxBodyBytes`: the largest body; each share is at least that (or the whole pool), so any valid body can be read. */
  constructor(
    readonly capacity: number,
    maxBodyBytes = 0,
  ) {
    const atLeastOneBody = (n: number) => Math.min(capacity, Math.max(n, maxBodyBytes));
    this.addressCapacity = atLeastOneBody(Math.floor(capacity * D.BODY_BUDGET_ADDRESS_SHARE));
    this.clientCapacity = atLeastOneBody(capacity - Math.floor(capacity * D.BODY_BUDGET_NODE_SHARE));
  }

  /**
   * Called with its size as each reserved body (larger than D.BODY_BUDGET_SMALL_BYTES) is reserved
   * and released: the memory guard samples RSS for a large one, since one such body moves it by
   * several times its size within a sampling interval, and counts memory as in play for the rest.
   */
  onBody(observer: (n: number) => void): void {
    this.observer = observer;
  }

  get inUse(): number {
    return this.used;
  }

  /**
   * Reserves `n` bytes for a body of `owner` (a client address; undefined: not counted per address)
   * on a node route or not. Returns the refusal (nothing reserved), or undefined when reserved.
   */
  tryReserve(n: number, owner?: string, node = false): RelayError | undefined {
    if (n <= 0) return undefined;
    if (this.used + n > (node ? this.capacity : this.clientCapacity)) return bodyBudgetFull();
    if (!node && owner !== undefined) {
      const held = (this.perAddress.get(owner) ?? 0) + n;
      if (held > this.addressCapacity) return bodyAddressFull();
      this.perAddress.set(owner, held);
    }
    this.used += n;
    this.observer?.(n);
    return undefined;
  }

  /** Gives back what tryReserve reserved, with the same owner and route kind. */
  release(n: number, owner?: string, node = false): void {
    if (n <= 0) return;
    this.used = Math.max(0, this.used - n);
    if (!node && owner !== undefined) {
      const held = (this.perAddress.get(owner) ?? 0) - n;
      if (held > 0) this.perAddress.set(owner, held);
      else this.perAddress.delete(owner);
    }
    this.observer?.(n);
  }
}

/** How the body of one request may be read: attached by the app when the request is admitted. */
export interface BodyPolicy {
  budget: BodyBudget;
  /** A node route whose registration token was configured (and is checked before the body is read). */
  node: boolean;
  /**
   * Whose body it is: the client address, asked only for a body large enough to reserve; and its
   * connection's idle timeout, set for the time the body may take (holdForBody).
   */
  client: { readonly clientId: string; holdOpen?(seconds?: number): void } | undefined;
  /** performance.now() by which the whole body must have arrived. */
  deadline: number;
  timeoutMs: number;
  /** The server's idle timeout (RELAY_IDLE_TIMEOUT_SECONDS): holdForBody never goes below it. */
  idleTimeoutSeconds?: number;
  /** The route's own body limit (RouteSpec.maxBodyBytes), when below the reader's, and its refusal. */
  maxBytes?: number;
  tooLarge?: () => RelayError;
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
 * Past the body deadline, what the idle timeout leaves for the 408 to be written: more than one of
 * the 4 s ticks in which uWebSockets counts idle time, so the tick never lands before the deadline.
 */
export const BODY_HOLD_MARGIN_SECONDS = 5;

/**
 * Before a body is read: its connection's idle timeout becomes the time left to the body deadline
 * (plus a margin for the 408), so the deadline is what ends a slow body, with its JSON 408.
 * uWebSockets resets a connection's idle timer only while data arrives at 16 KB/s or more, so a
 * body trickled more slowly would otherwise be cut at RELAY_IDLE_TIMEOUT_SECONDS with no answer.
 */
export function holdForBody(req: Request): void {
  const policy = policies.get(req);
  if (!policy?.client?.holdOpen) return;
  const seconds = Math.ceil(Math.max(0, policy.deadline - performance.now()) / 1000) + BODY_HOLD_MARGIN_SECONDS;
  policy.client.holdOpen(Math.min(BUN_MAX_IDLE_TIMEOUT_SECONDS, Math.max(policy.idleTimeoutSeconds ?? 0, seconds)));
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
export const bodyAddressFull = () =>
  busy("body_bytes_client", "This client address is sending as many large request bodies as it may; retry shortly");

export const bodyTimeout = (timeoutMs: number) =>
  new RelayError(408, "body_timeout", `The request body did not arrive within ${timeoutMs} ms`, undefined, CLOSE);
