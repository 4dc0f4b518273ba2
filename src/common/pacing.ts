import type { RequestContext } from "../http/context.ts";

/**
 * Pacing of client polls past their address's share of held polls (RELAY_MAX_HOLDS_PER_IP), for
 * both protocols: the answer ("none yet", or API v1's 429) comes CLIENT_PACE_MS late instead of at
 * once. Answered at once, a crowd over its share re-polls in a tight loop and the relay spends its
 * one thread answering it, delaying nodes' dispatch (measured: a 1,200-connection crowd on one
 * address at 20,000 requests/s); answered a second late, each connection polls at most once a
 * second. A pace holds no slot of the hold budget, only its connection.
 *
 * Paces are capped per address (maxPerAddress, a multiple of the hold share): past it the answer
 * comes at once and the connection is closed, so one address cannot keep more connections than
 * its shares (RELAY_MAX_CONNECTIONS is for everyone).
 */

/** How late a paced answer comes, and its Retry-After. */
export const CLIENT_PACE_MS = 1_000;

export interface Pacer {
  /**
   * Waits out the pace (or until the client leaves) and resolves true; resolves false at once when
   * the address has its share of paces already: answer now, with `Connection: close`.
   */
  pace(req: Request, ctx: RequestContext): Promise<boolean>;
}

export interface PacerDeps {
  /** Paces at once per client address; 0: no cap. */
  maxPerAddress: number;
  /** Counts a pace refused for the address's share (the rejection reason paced_per_ip_client). */
  onFull(): void;
  paceMs?: number;
}

export function createPacer(deps: PacerDeps): Pacer {
  const paceMs = deps.paceMs ?? CLIENT_PACE_MS;
  /** Paces per client address; an address leaves the map when its last pace ends (bounded by connections). */
  const pacing = new Map<string, number>();
  return {
    async pace(req, ctx) {
      const id = ctx.clientId;
      const n = pacing.get(id) ?? 0;
      if (deps.maxPerAddress > 0 && n >= deps.maxPerAddress) {
        deps.onFull();
        return false;
      }
      pacing.set(id, n + 1);
      try {
        await sleepUnlessAborted(paceMs, req.signal);
      } finally {
        const left = (pacing.get(id) ?? 1) - 1;
        if (left > 0) pacing.set(id, left);
        else pacing.delete(id);
      }
      return true;
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
