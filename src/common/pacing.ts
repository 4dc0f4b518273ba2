import type { RequestContext } from "../http/context.ts";

/**
 * Pacing of client polls (legacy retrieves, API v1 responses/retrieve) that the relay would
 * otherwise answer at once with nothing: polls past their address's share of held polls
 * (RELAY_MAX_HOLDS_PER_IP), polls past the whole hold budget (RELAY_MAX_LONG_POLLS), and an
 * address's "nothing here" answers past its allowance per second (an unknown request id polled in a
 * loop). The answer comes CLIENT_PACE_MS late instead of at once. Answered at once, a crowd that
 * ignores Retry-After re-polls in a tight loop and the relay spends its one thread answering it,
 * delaying nodes' dispatch (measured: a 1,200-connection crowd at 20,000-30,000 requests/s).
 * Answered a second late, each connection polls at most once a second: a tarpit, costing the relay
 * one pending promise per connection and no timer of its own (paces share one timer per
 * PACE_SLOT_MS slot).
 *
 * Paces have a pool of their own (maxTotal, RELAY_MAX_CONNECTIONS) and a share of it per address
 * (maxPerAddress): past either the answer comes at once and the connection is closed. Admission
 * does not count paced requests against RELAY_MAX_CONNECTIONS (the app subtracts `active`): were
 * they counted, two addresses filling their shares with paced polls would have every other
 * client's and node's request refused `503 busy` for connections. So requests in flight stay
 * bounded by twice RELAY_MAX_CONNECTIONS (plus the nodes' headroom), and this module's memory by
 * maxTotal: one entry per pace in its slot, one counter per pacing address, one per address that
 * was answered nothing in the current second.
 */

/** How late a paced answer comes, and its Retry-After. */
export const CLIENT_PACE_MS = 1_000;
/**
 * Paces end on a grid of this many ms: one timer per slot for every pace ending in it, instead of
 * a timer (and an abort listener) per pace.
 */
export const PACE_SLOT_MS = 50;
/**
 * Each pace is longer by up to this share of CLIENT_PACE_MS, at random: a crowd that arrived
 * together (a flood's start, a burst of reconnects) would otherwise come back in one slot, every
 * second, and the relay answer it in one burst while a node's dispatch waits behind it.
 */
export const PACE_JITTER_SHARE = 0.25;
/**
 * "Nothing here" answers given at once per address and second before they are paced too (a
 * fixed one-second window): a browser polls a few times a second at most, a NAT of many far less
 * than RELAY_MAX_HOLDS_PER_IP each.
 */
export const EMPTY_ANSWERS_PER_SECOND = 32;

export interface Pacer {
  /**
   * Waits out the pace and resolves true; resolves false at once when the address has its share of
   * paces already: answer now, with `Connection: close`. A client that leaves mid-pace keeps its
   * place until the pace's slot ends (at most 1.25 CLIENT_PACE_MS + PACE_SLOT_MS): no listener per pace.
   */
  pace(req: Request, ctx: RequestContext): Promise<boolean>;
  /**
   * Counts an answer that carries nothing for the client (unknown request, none yet) given without
   * a hold; true once the address is past EMPTY_ANSWERS_PER_SECOND this second: pace this one.
   */
  overAllowance(ctx: RequestContext): boolean;
  /** Paces in progress (clients that left mid-pace included, until their slot ends). */
  readonly active: number;
}

export interface PacerDeps {
  /** Paces at once per client address; 0: no cap. */
  maxPerAddress: number;
  /** Paces at once over all addresses; 0: no cap. */
  maxTotal?: number;
  /** Counts a pace refused for the address's share (the rejection reason paced_per_ip_client). */
  onFull(): void;
  paceMs?: number;
  emptyAnswersPerSecond?: number;
}

export function createPacer(deps: PacerDeps): Pacer {
  const paceMs = deps.paceMs ?? CLIENT_PACE_MS;
  const allowance = deps.emptyAnswersPerSecond ?? EMPTY_ANSWERS_PER_SECOND;
  /** Paces per client address; an address leaves the map when its last pace ends. */
  const pacing = new Map<string, number>();
  const maxTotal = deps.maxTotal ?? 0;
  let active = 0;
  /** Resolvers of the paces ending in each slot (keyed by the slot's end, ms). */
  const slots = new Map<number, Array<() => void>>();
  /** Empty answers per address in the current one-second window; cleared as each window starts. */
  let window = 0;
  const empties = new Map<string, number>();

  function sleep(): Promise<void> {
    const now = performance.now();
    const end = Math.ceil((now + paceMs * (1 + Math.random() * PACE_JITTER_SHARE)) / PACE_SLOT_MS) * PACE_SLOT_MS;
    return new Promise((resolve) => {
      let due = slots.get(end);
      if (!due) {
        const list: Array<() => void> = (due = []);
        slots.set(end, list);
        setTimeout(() => {
          slots.delete(end);
          for (const r of list) r();
        }, end - now);
      }
      due.push(resolve);
    });
  }

  return {
    async pace(_req, ctx) {
      const id = ctx.clientId;
      const n = pacing.get(id) ?? 0;
      if ((deps.maxPerAddress > 0 && n >= deps.maxPerAddress) || (maxTotal > 0 && active >= maxTotal)) {
        deps.onFull();
        return false;
      }
      pacing.set(id, n + 1);
      active++;
      try {
        await sleep();
      } finally {
        active--;
        const left = (pacing.get(id) ?? 1) - 1;
        if (left > 0) pacing.set(id, left);
        else pacing.delete(id);
      }
      return true;
    },
    overAllowance(ctx) {
      const second = Math.floor(performance.now() / 1000);
      if (second !== window) {
        window = second;
        empties.clear();
      }
      const id = ctx.clientId;
      const n = (empties.get(id) ?? 0) + 1;
      empties.set(id, n);
      return n > allowance;
    },
    get active() {
      return active;
    },
  };
}

/** Resolves after `ms`, or at once when `signal` aborts (the client left: nobody waits for the answer). */
export function sleepUnlessAborted(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
