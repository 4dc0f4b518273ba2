import type { Logger } from "pino";
import type { RequestContext } from "../http/context.ts";
import { counterChildren, type Metrics } from "../ops/metrics.ts";
import type { Notifier } from "./notifier.ts";

/** "overflow": every hold slot was taken; "ip_limit": this client address held its share (RELAY_MAX_HOLDS_PER_IP). */
export type HoldOutcome = "immediate" | "woken" | "timeout" | "aborted" | "draining" | "overflow" | "ip_limit" | "disabled";

export interface LongPollDeps {
  notifier: Notifier;
  metrics: Metrics;
  /** Which hold budget this is ("node" or "client"): a label of the capacity rejection. */
  side: string;
  /** Default hold; a route may ask for its own (API v1 holds for poll_wait_seconds). */
  holdMs: number;
  /** Requests held at once across every route; beyond, polls answer at once ("overflow"). */
  maxWaiting: number;
  /**
   * Requests held at once per client address (ctx.clientId), so one address cannot take the whole
   * budget; beyond, its polls answer at once ("ip_limit"). 0 or absent: no per-address cap.
   */
  maxPerIp?: number;
  /** Aborts when the relay starts draining: held requests answer at once. */
  drainSignal: AbortSignal;
  log?: Logger;
}

export interface LongPoll {
  /**
   * Runs `attempt` now; when it yields nothing, holds the request until the topic is notified,
   * the hold expires, the client leaves or the relay drains, and then attempts once more.
   * Never attempts for a client that is gone, so no job is popped into a closed socket.
   */
  hold<T>(
    req: Request,
    ctx: RequestContext,
    topic: string,
    attempt: () => Promise<T | undefined>,
    holdMs?: number,
  ): Promise<{ value: T | undefined; outcome: HoldOutcome }>;
  readonly waiting: number;
}

export function createLongPoll(deps: LongPollDeps): LongPoll {
  let waiting = 0;
  const maxPerIp = deps.maxPerIp ?? 0;
  /** Held requests per client address; an address leaves the map when its last hold ends. */
  const perIp = new Map<string, number>();

  async function hold<T>(req: Request, ctx: RequestContext, topic: string, attempt: () => Promise<T | undefined>, holdMs = deps.holdMs) {
    const route = ctx.route;
    const deadline = performance.now() + holdMs;
    // One look before subscribing: on a busy relay most polls and retrieves find their work at
    // once, and a subscription (a promise, a closure, a set entry) made and dropped for each was
    // most of this function's cost. A miss that will be held subscribes and looks once more
    // below, so a notification between the two looks is not lost.
    const first = await attempt();
    if (first !== undefined) return finish(route, first, "immediate");
    for (let round = 0; ; round++) {
      const stop = stopBefore(req, ctx, round, holdMs, deadline - performance.now());
      if (stop) return finish(route, undefined, stop);
      const sub = deps.notifier.subscribe(topic);
      let value: T | undefined;
      try {
        value = await attempt();
      } catch (err) {
        sub.cancel();
        throw err;
      }
      if (value !== undefined) {
        sub.cancel();
        return finish(route, value, round === 0 ? "immediate" : "woken");
      }
      const remaining = deadline - performance.now();
      const stopped = stopBefore(req, ctx, round, holdMs, remaining);
      if (stopped) {
        sub.cancel();
        return finish(route, undefined, stopped);
      }
      if (round === 0) ctx.holdOpen();
      const outcome = await wait(sub.fired, Math.max(remaining, 0), req.signal, route, ctx.clientId);
      sub.cancel();
      if (outcome === "aborted") return finish(route, undefined, "aborted");
      if (outcome !== "woken") {
        // Timeout or drain: one last look so work that raced the timer is not left behind.
        const last = req.signal.aborted ? undefined : await attempt();
        return finish(route, last, last !== undefined ? "woken" : outcome);
      }
    }
  }

  /** Why a look that found nothing ends the request now instead of holding it (undefined: hold). */
  function stopBefore(req: Request, ctx: RequestContext, round: number, holdMs: number, remaining: number): HoldOutcome | undefined {
    return holdMs <= 0 ? "disabled"
      : deps.drainSignal.aborted ? "draining"
      : req.signal.aborted ? "aborted"
      : remaining <= 0 ? "timeout"
      : round === 0 && waiting >= deps.maxWaiting ? "overflow"
      : round === 0 && overIpShare(ctx.clientId) ? "ip_limit"
      : undefined;
  }

  const overIpShare = (ip: string | undefined) => maxPerIp > 0 && ip !== undefined && (perIp.get(ip) ?? 0) >= maxPerIp;

  // The outcome counter's label sets by route and outcome (a few dozen at most), added to directly
  // instead of through prom-client's labels() on every answer.
  const countOutcome = counterChildren(deps.metrics.longPollOutcomes, ["route", "outcome"]);
  function finish<T>(route: string, value: T | undefined, outcome: HoldOutcome) {
    if (outcome === "overflow") deps.metrics.rejections.labels(deps.side === "node" ? "long_poll_capacity" : "long_poll_capacity_client").inc();
    if (outcome === "ip_limit") deps.metrics.rejections.labels(deps.side === "node" ? "long_poll_per_ip" : "long_poll_per_ip_client").inc();
    countOutcome(route, outcome);
    return { value, outcome };
  }

  async function wait(fired: Promise<void>, ms: number, client: AbortSignal, route: string, ip: string | undefined): Promise<HoldOutcome> {
    waiting++;
    if (ip !== undefined) perIp.set(ip, (perIp.get(ip) ?? 0) + 1);
    deps.metrics.longPollsWaiting.labels(route).inc();
    let timer: ReturnType<typeof setTimeout> | undefined;
    let onClient: (() => void) | undefined;
    let onDrain: (() => void) | undefined;
    try {
      return await Promise.race<HoldOutcome>([
        fired.then(() => "woken" as const),
        new Promise<HoldOutcome>((resolve) => (timer = setTimeout(() => resolve("timeout"), ms))),
        new Promise<HoldOutcome>((resolve) => {
          onClient = () => resolve("aborted");
          client.addEventListener("abort", onClient, { once: true });
        }),
        new Promise<HoldOutcome>((resolve) => {
          onDrain = () => resolve("draining");
          if (deps.drainSignal.aborted) resolve("draining");
          else deps.drainSignal.addEventListener("abort", onDrain, { once: true });
        }),
      ]);
    } finally {
      waiting--;
      if (ip !== undefined) {
        const left = (perIp.get(ip) ?? 1) - 1;
        if (left > 0) perIp.set(ip, left);
        else perIp.delete(ip);
      }
      deps.metrics.longPollsWaiting.labels(route).dec();
      clearTimeout(timer);
      if (onClient) client.removeEventListener("abort", onClient);
      if (onDrain) deps.drainSignal.removeEventListener("abort", onDrain);
    }
  }

  return {
    hold,
    get waiting() {
      return waiting;
    },
  };
}
