import type Redis from "ioredis";
import type { Logger } from "pino";
import type * as Rlf from "rate-limiter-flexible";
import type { RateLimiterAbstract } from "rate-limiter-flexible";
import { CONTROL_PLANE_ROUTE_BY_PATH, CONTROL_PLANE_ROUTES, type ControlPlaneRoute, type LimitsConfig, type RateLimit } from "../config/limits.ts";
import { RelayError } from "../errors.ts";
import { whenReady } from "../state/redis.ts";
import type { FailureSignal } from "./redis-notifier.ts";
import { sha256Hex } from "./tokens.ts";
import type { RequestContext } from "../http/context.ts";
import type { RouteSpec } from "../http/routes.ts";

/**
 * Rate limits (token.place API v1 relay spec §11) with upstream's semantics, counted with
 * rate-limiter-flexible in fixed windows (upstream: Flask-Limiter / limits "fixed-window").
 *
 * - public (`limit: "public"` routes): API_RATE_LIMIT and API_DAILY_QUOTA, each a bucket per
 *   client address per route, charged before anything but the legacy switch and the body bound.
 * - control plane (`limit: "control"` routes): a bucket per client address per route, charged
 *   before the token check, and a bucket per route per node identity that the handlers charge once
 *   they know the identity (the body is parsed once, by the handler).
 * - auth failures: wrong or missing registration tokens per client address, all node routes
 *   together. Each token check first reserves a point and gives it back when the token is right,
 *   so a burst of guesses in parallel gets no further than the limit. Wrong or missing operator
 *   tokens (POST /api/v1/relay/unregister) are counted the same way, with the same
 *   RELAY_AUTH_FAILURE_LIMIT, under a key of their own: a node with a bad registration token does
 *   not lock its address out of the operator route, nor an operator's typo the nodes.
 *
 * A request answered 429 costs nothing: buckets already charged for it are refunded (upstream's
 * control-plane rollback). Counters live where the relay's state lives: this process, or the
 * shared Valkey/Redis, so several replicas enforce one limit. Should the datastore fail, each
 * replica counts in its own memory until it is back (rate-limiter-flexible's insurance limiter):
 * limits keep applying, per replica, rather than failing open or closed.
 */

export type LimitedBucket = "public" | "control_ip" | "control_identity" | "auth_failures" | "operator_auth_failures";

/** Whose token a check compares: the nodes' registration token or the operator token. */
export type AuthScope = "server-token" | "operator-token";

/** Failures per scope count apart; the log label of each scope's refusals. */
const AUTH_SCOPES: Record<AuthScope, { keyPrefix: string; label: LimitedBucket }> = {
  "server-token": { keyPrefix: "", label: "auth_failures" },
  "operator-token": { keyPrefix: "operator:", label: "operator_auth_failures" },
};

/** Upstream charges these identity buckets only once a configured registration token matched. */
const TOKEN_BOUND_IDENTITY: ReadonlySet<ControlPlaneRoute> = new Set(["register", "unregister", "poll", "responses"]);

export interface RateLimitsDeps {
  config: LimitsConfig;
  /** Registration tokens are configured (identity buckets of token-bound routes apply only then). */
  serverTokensConfigured: boolean;
  /**
   * The shared datastore; absent: counters in this process. `authFailures`: the replicas' signal
   * of failed token checks (src/common/redis-notifier.ts); without it every check reads the counter.
   */
  redis?: { client: Redis; keyPrefix: string; commandTimeoutMs: number; authFailures?: FailureSignal };
  logger?: Logger;
  /** Called once per request answered 429 (metrics). */
  onLimited?: (route: string, bucket: LimitedBucket) => void;
}

export interface RateLimits {
  /** wrap(): the per-address buckets a route declares. Throws the 429. */
  charge(spec: RouteSpec, req: Request, ctx: RequestContext): Promise<void>;
  /**
   * wrap(), before a registration token is compared: refuses (429) an address whose auth-failure
   * points are spent. Await `failed()` when the token was wrong, before answering 401: the
   * failure is then counted before the client can send its next guess, on every replica.
   */
  authAttempt(req: Request, ctx: RequestContext, scope?: AuthScope): Promise<AuthAttempt>;
  /** Handlers: charge the identity bucket (register, poll, responses; unregister: see owner). */
  identity(route: ControlPlaneRoute, identity: string, ctx: RequestContext): Promise<void>;
  /**
   * Handlers, for identities proven by the control credential (control, progress, unregister):
   * 429 now when this node's bucket is spent; call the returned function once the store verified
   * the credential, to charge it. Nothing is charged for a caller that does not hold it.
   */
  owner(route: ControlPlaneRoute, nodeKey: string, ctx: RequestContext): Promise<() => Promise<void>>;
  /** The client address of a request as rate limiting sees it (tests, logs). */
  clientKey(req: Request, ctx: RequestContext): string;
}

/** One token check of an address (authAttempt). */
export interface AuthAttempt {
  /**
   * Called right before the comparison, with nothing awaited in between: a refusal (a promise
   * that rejects with the 429) once this process has counted the address's failures as spent in
   * the current window, else undefined. Parallel guesses from one address pass authAttempt
   * together, before any of their failures has reached the counter; this check and the local count
   * in failed() run in the same synchronous step as each comparison, so at most the limit of them
   * is ever compared on one replica.
   */
  spent(): Promise<never> | undefined;
  /** Counts one failure (locally at once, then in the shared counter), resolved before the 401. */
  failed(): Promise<void>;
}

/**
 * Addresses the local failure count keeps per window: a distributed guesser past this many
 * addresses in one window is left to the shared counters (each address then gets its own limit).
 */
const LOCAL_AUTH_FAILURE_KEYS = 100_000;

interface Bucket {
  limiter: RateLimiterAbstract;
  limit: RateLimit;
}

// The three classes used, from their own modules: the package entry loads every store it supports
// (MySQL, Mongo, etcd, cluster, ...), ~3.5 ms of the binary's start-up against ~0.2 ms for these.
const RateLimiterMemory = require("rate-limiter-flexible/lib/RateLimiterMemory") as typeof Rlf.RateLimiterMemory;
const RateLimiterRedis = require("rate-limiter-flexible/lib/RateLimiterRedis") as typeof Rlf.RateLimiterRedis;
const RateLimiterRes = require("rate-limiter-flexible/lib/RateLimiterRes") as typeof Rlf.RateLimiterRes;
type RateLimiterRes = Rlf.RateLimiterRes;

/** Bucket keys never carry a raw address or key: a fixed-length digest of it. */
const digest = (value: string) => sha256Hex(value).slice(0, 32);

export function rateLimitExceeded(limit: RateLimit, msBeforeNext: number): RelayError {
  const retryAfter = Math.max(1, Math.ceil(msBeforeNext / 1000));
  const message = `Rate limit exceeded: ${limit.text}. Try again in ${retryAfter} seconds.`;
  return new RelayError(
    429,
    "rate_limited",
    message,
    { error: { message, type: "rate_limit_error", code: "rate_limit_exceeded", param: null } },
    { "Retry-After": String(retryAfter) },
  );
}

export function createRateLimits(deps: RateLimitsDeps): RateLimits {
  const { config } = deps;

  const bucket = (name: string, limit: RateLimit): Bucket => {
    const opts = { points: limit.points, duration: limit.seconds };
    const local = (prefix: string) => new RateLimiterMemory({ ...opts, keyPrefix: prefix });
    if (!deps.redis) return { limiter: local(`rl:${name}`), limit };
    const keyPrefix = `${deps.redis.keyPrefix}rl:${name}:${limit.points}/${limit.seconds}`;
    return {
      limiter: new RateLimiterRedis({
        ...opts,
        storeClient: deps.redis.client,
        keyPrefix,
        // Not connected: straight to the per-replica counters instead of waiting for a timeout.
        rejectIfRedisNotReady: true,
        insuranceLimiter: local(`insurance:${keyPrefix}`),
      }),
      limit,
    };
  };

  // Until the first connection is up (start-up), wait for it as state calls do, so the first
  // requests are not counted apart; after that a connection that is down means the insurance
  // counters at once, never a wait per request.
  let connected = !deps.redis || deps.redis.client.status === "ready";
  deps.redis?.client.once("ready", () => (connected = true));
  const ready = async () => {
    if (!connected && deps.redis) await whenReady(deps.redis.client, deps.redis.commandTimeoutMs).catch(() => undefined);
  };

  const publicBuckets = config.public.map((l, i) => bucket(`public${i}`, l));
  const controlIp = bucket("control-ip", config.controlPlaneIp);
  const identityBuckets = Object.fromEntries(CONTROL_PLANE_ROUTES.map((r) => [r, bucket(`control-${r}`, config.controlPlane[r])])) as Record<
    ControlPlaneRoute,
    Bucket
  >;
  const authFailures = bucket("auth-failures", config.authFailures);
  /**
   * performance.now() of the last failed token check this process knows of: its own, and with
   * shared counters any replica's (announced over Pub/Sub, see authAttempt).
   */
  let lastAuthFailure = Number.NEGATIVE_INFINITY;
  const failureWindowMs = authFailures.limit.seconds * 1000;
  const signal = deps.redis?.authFailures;
  /**
   * With shared counters, every failure also renews one marker key that lives a window: a replica
   * that (re)subscribes reads it to learn of failures announced before it could hear them.
   */
  const marker = deps.redis ? `${deps.redis.keyPrefix}rl:auth-failures:last` : "";
  signal?.listen({
    onFailure: () => (lastAuthFailure = performance.now()),
    async catchUp() {
      const ms = await deps.redis!.client.pttl(marker);
      // The last failure anywhere was at most a window before the marker's expiry.
      if (ms > 0) lastAuthFailure = Math.max(lastAuthFailure, performance.now() - failureWindowMs + ms);
    },
  });
  /** Failures per address counted by this process in a fixed window (see AuthAttempt.spent). */
  const localFailures = new Map<string, number>();
  let localWindowStart = 0;
  // Date.now(), as the counters' own windows (rate-limiter-flexible), so both end together.
  const localWindow = () => {
    const now = Date.now();
    if (now - localWindowStart >= failureWindowMs) {
      localFailures.clear();
      localWindowStart = now;
    }
    return now;
  };
  /** What authAttempt hands back: `failed()` counts one failure against the address's bucket key. */
  const failureCounter = (key: () => string, ctx: RequestContext, label: LimitedBucket): AuthAttempt => ({
    spent() {
      // No failure heard of within a window (the usual case): no address can have spent any.
      if (performance.now() - lastAuthFailure > failureWindowMs && localFailures.size === 0) return undefined;
      const now = localWindow();
      if ((localFailures.get(key()) ?? 0) < authFailures.limit.points) return undefined;
      return refuse(ctx, authFailures, localWindowStart + failureWindowMs - now, label);
    },
    async failed() {
      lastAuthFailure = performance.now();
      localWindow();
      const k = key();
      if (localFailures.has(k) || localFailures.size < LOCAL_AUTH_FAILURE_KEYS) localFailures.set(k, (localFailures.get(k) ?? 0) + 1);
      const counted = authFailures.limiter.consume(k, 1).catch(() => undefined);
      // Sent together with the counter's script (one round trip), and awaited: the datastore holds
      // the count, the marker and the announcement before the 401 goes out.
      const told = signal
        ? [deps.redis!.client.set(marker, "1", "PX", failureWindowMs).catch(() => undefined), signal.announce()]
        : [];
      await Promise.all([counted, ...told]);
    },
  });
  /**
   * No address can have failures to spend: none failed within a whole window, as far as this
   * process can know. With shared counters that needs the other replicas' announcements, so it
   * holds only while subscribed to them and caught up (else the counters are read).
   */
  const noRecentFailure = () =>
    (!deps.redis || signal?.listening === true) && performance.now() - lastAuthFailure > failureWindowMs;

  /** Points taken for each request so far, given back if it ends in a 429. */
  const charged = new WeakMap<RequestContext, { b: Bucket; key: string }[]>();
  const clientKeys = new WeakMap<RequestContext, string>();

  let lastStoreWarning = 0;
  const storeFailed = (err: unknown) => {
    // Only without an insurance limiter (never configured so) or should it fail too: let the request through.
    if (performance.now() - lastStoreWarning > 60_000) {
      lastStoreWarning = performance.now();
      deps.logger?.warn({ err }, "rate limit counter unavailable; request not limited");
    }
  };

  const clientKey = (req: Request, ctx: RequestContext): string => {
    let key = clientKeys.get(ctx);
    if (key === undefined) {
      key = ctx.clientId;
      clientKeys.set(ctx, key);
    }
    return key;
  };

  async function refund(ctx: RequestContext): Promise<void> {
    const taken = charged.get(ctx);
    charged.delete(ctx);
    if (taken) await Promise.all(taken.map(({ b, key }) => b.limiter.reward(key, 1).catch(() => undefined)));
  }

  async function refuse(ctx: RequestContext, b: Bucket, msBeforeNext: number, kind: LimitedBucket): Promise<never> {
    await refund(ctx);
    deps.onLimited?.(ctx.route, kind);
    ctx.log.debug({ event: "rate_limited", bucket: kind, limit: b.limit.text }, "rate limited");
    throw rateLimitExceeded(b.limit, msBeforeNext);
  }

  /**
   * Takes a point from each bucket at once (with shared counters their scripts are sent together:
   * one round trip for all); on a 429 refunds every point this request took and throws the first
   * refusal in the buckets' order.
   */
  async function take(ctx: RequestContext, buckets: readonly Bucket[], key: string, kind: LimitedBucket): Promise<void> {
    await ready();
    const results = await Promise.all(
      buckets.map((b) =>
        b.limiter.consume(key, 1).then(
          () => undefined,
          (err: unknown) => err,
        ),
      ),
    );
    let refused: { b: Bucket; msBeforeNext: number } | undefined;
    results.forEach((err, i) => {
      const b = buckets[i]!;
      if (err === undefined) {
        const list = charged.get(ctx);
        if (list) list.push({ b, key });
        else charged.set(ctx, [{ b, key }]);
      } else if (!(err instanceof RateLimiterRes)) {
        storeFailed(err);
      } else {
        // The refused request's own point stays in the spent bucket: harmless, it is over anyway.
        refused ??= { b, msBeforeNext: err.msBeforeNext };
      }
    });
    if (refused) await refuse(ctx, refused.b, refused.msBeforeNext, kind);
  }

  return {
    clientKey,

    async charge(spec, req, ctx) {
      if (!config.enabled || spec.limit === undefined) return;
      const ip = clientKey(req, ctx);
      if (spec.limit === "public") {
        const key = `${spec.path}:${digest(ip)}`;
        await take(ctx, publicBuckets, key, "public");
        return;
      }
      const route = CONTROL_PLANE_ROUTE_BY_PATH[spec.path];
      if (route === undefined) throw new Error(`${spec.path} declares limit "control" but is no control-plane route`);
      await take(ctx, [controlIp], `${route}:${digest(ip)}`, "control_ip");
    },

    async authAttempt(req, ctx, scope = "server-token") {
      const { keyPrefix, label } = AUTH_SCOPES[scope];
      // No address can have failures to spend once a whole window has passed since the last
      // failure of any address (fixed windows: every counter that held one has expired): then
      // nothing is looked up. The common case, a node with the right token, costs no address
      // digest and no datastore round trip. A failure on another replica reaches this one over
      // Pub/Sub within about a round trip of its counter update; a guess racing that message is
      // like the parallel guesses below, compared once more before the refusal, and only while no
      // failure at all was heard of within the window (afterwards every check reads the counter).
      if (noRecentFailure()) {
        let key: string | undefined;
        return failureCounter(() => (key ??= keyPrefix + digest(clientKey(req, ctx))), ctx, label);
      }
      const key = keyPrefix + digest(clientKey(req, ctx));
      await ready();
      // Only failures are counted, and an address whose failures are spent is refused before the
      // comparison: legitimate nodes are never limited by their own (correct) traffic, however
      // many requests they run at once. Parallel guesses in flight together pass here before their
      // failures land in the counter; AuthAttempt.spent stops them at the limit on this replica.
      let spent: RateLimiterRes | null = null;
      try {
        spent = await authFailures.limiter.get(key);
      } catch (err) {
        storeFailed(err);
      }
      if (spent && spent.consumedPoints >= authFailures.limit.points && spent.msBeforeNext > 0) return refuse(ctx, authFailures, spent.msBeforeNext, label);
      return failureCounter(() => key, ctx, label);
    },

    async identity(route, identity, ctx) {
      if (!config.enabled || (TOKEN_BOUND_IDENTITY.has(route) && !deps.serverTokensConfigured)) return;
      await take(ctx, [identityBuckets[route]], digest(identity), "control_identity");
    },

    async owner(route, nodeKey, ctx) {
      const none = async () => {};
      if (!config.enabled || (TOKEN_BOUND_IDENTITY.has(route) && !deps.serverTokensConfigured)) return none;
      const b = identityBuckets[route];
      const key = digest(nodeKey);
      await ready();
      try {
        const seen = await b.limiter.get(key);
        if (seen && seen.consumedPoints >= b.limit.points) await refuse(ctx, b, seen.msBeforeNext, "control_identity");
      } catch (err) {
        if (err instanceof RelayError) throw err;
        storeFailed(err);
      }
      return async () => {
        try {
          await b.limiter.consume(key, 1);
        } catch (err) {
          // The request was allowed and is done; only its successors are refused.
          if (!(err instanceof RateLimiterRes)) storeFailed(err);
        }
      };
    },
  };
}
