import type { Logger } from "pino";
import { brokerRoutes, createBrokerHandlers } from "./broker/handlers.ts";
import type { BrokerStore } from "./broker/types.ts";
import { createLongPoll } from "./common/long-poll.ts";
import { createPacer } from "./common/pacing.ts";
import type { Notifier } from "./common/notifier.ts";
import { createRateLimits, type RateLimitsDeps } from "./common/rate-limits.ts";
import { createRequestLine } from "./log.ts";
import { SERVER_TOKEN_HEADER, createTokenCheck } from "./common/tokens.ts";
import { PACED_POLLS_ADDRESS_SHARE } from "./config/defaults.ts";
import type { Config } from "./config/index.ts";
import { RelayError, notFound } from "./errors.ts";
import { createAdmission } from "./http/admission.ts";
import { createClientIpResolver, rateLimitKey } from "./http/client-ip.ts";
import type { RequestContext } from "./http/context.ts";
import { createDelivery } from "./http/delivery.ts";
import { errorResponse, json } from "./http/json.ts";
import { createLogSampler } from "./http/log-sampler.ts";
import { REQUEST_ID_HEADER, requestIdFor } from "./http/request-id.ts";
import { requestPath } from "./http/request-url.ts";
import { Router, type Handler } from "./http/router.ts";
import { mount, type Mount, type RouteSpec } from "./http/routes.ts";
import { createHealthHandlers, opsRoutes, type ReadinessCheck } from "./ops/health.ts";
import type { Lifecycle } from "./ops/lifecycle.ts";
import type { MemoryGuard } from "./ops/memory-guard.ts";
import type { Metrics } from "./ops/metrics.ts";
import { createOperatorReadGuard } from "./ops/operator-auth.ts";
import { isReservedPath } from "./routes.ts";
import { v1Errors } from "./v1/errors.ts";
import { createV1Mounts } from "./v1/index.ts";
import type { V1Metrics } from "./v1/metrics.ts";
import type { V1Store } from "./v1/store.ts";
import { REVISION, VERSION } from "./version.ts";
import { createWebMount } from "./web/index.ts";

/**
 * Refusals the long-poll module has counted already, as the hold's outcome (ip_limit), before the
 * handler turns them into an error answer: counted once per refusal, not twice.
 */
const COUNTED_BY_HOLDS = new Set(["long_poll_per_ip_client"]);

/** What the proxy feature plugs into the app (src/proxy). */
export interface ProxyRoute {
  matches(pathname: string): boolean;
  handle(req: Request, ctx: RequestContext): Promise<Response>;
}

/** What only the server adapter knows about a request. */
export interface ServerAdapter {
  clientIp(req: Request): string | undefined;
  /** Bun's server.timeout(req, seconds): 0 (the default) lifts the idle timeout. */
  holdOpen(req: Request, seconds?: number): void;
  /** Requests the server is handling, this one included (Bun's server.pendingRequests). */
  pendingRequests?(): number;
}

export interface AppDeps {
  config: Config;
  store: BrokerStore;
  v1Store: V1Store;
  v1Metrics: V1Metrics;
  notifier: Notifier;
  logger: Logger;
  metrics: Metrics;
  lifecycle: Lifecycle;
  checks: ReadinessCheck[];
  proxy?: ProxyRoute;
  /** Where rate-limit counters live when state is shared (the state backend's datastore); else this process. */
  rateLimitStore?: RateLimitsDeps["redis"];
  /** Refuses large bodies while RSS is near RELAY_MEMORY_BUDGET_BYTES (src/ops/memory-guard.ts). */
  memoryGuard?: MemoryGuard;
}

/** CORS of the browser-callable client routes (token.place API v1 relay spec §2). */
const CORS_HEADERS = { "Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Retry-After" } as const;
const CORS_ENTRIES = Object.entries(CORS_HEADERS);
const PREFLIGHT_HEADERS = {
  ...CORS_HEADERS,
  "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
  "Access-Control-Allow-Headers": "Content-Type, Accept",
  "Access-Control-Max-Age": "600",
} as const;

const operatorReadForwarded = () =>
  new RelayError(403, "operator_read_forwarded", "Operator reads are not served through a proxy unless TOKENPLACE_METRICS_TOKEN is set");

/** Peers whose client identity is remembered (src/http/client-ip.ts does the work once per peer); the cache starts over when full. */
const IDENTITY_CACHE_ENTRIES = 4_096;
/** Longer X-Forwarded-For values are resolved every time rather than kept (bounds the cache's memory). */
const IDENTITY_CACHE_MAX_HEADER = 256;

export function createApp(deps: AppDeps) {
  const { config, metrics, logger } = deps;
  // Two hold budgets: anonymous clients holding retrieves can never take the slots compute nodes
  // need for their polls (spec §13 item 13: one concurrent long poll per node).
  const holds = (side: "node" | "client") =>
    createLongPoll({
      notifier: deps.notifier,
      metrics,
      side,
      holdMs: config.broker.longPollMs,
      maxWaiting: config.broker.maxLongPolls,
      maxPerIp: config.bounds.maxHoldsPerIp,
      drainSignal: deps.lifecycle.drainSignal,
    });
  const admission = createAdmission(config.bounds, metrics, config.maxBodyBytes, config.idleTimeoutSeconds);
  const requestLine = createRequestLine(logger);
  const refusalLog = createLogSampler();
  const memoryGuard = deps.memoryGuard;
  if (memoryGuard) admission.budget.onBody(memoryGuard.bodyRead);
  const longPoll = holds("node");
  const clientLongPoll = holds("client");
  const health = createHealthHandlers({
    lifecycle: deps.lifecycle,
    store: deps.store,
    v1Store: deps.v1Store,
    checks: deps.checks,
    facts: { upstream: config.upstreamUrl.href, gpuHost: config.gpuHost, relayOnly: config.relayOnly, version: VERSION },
  });
  const scrape = async () =>
    new Response(await metrics.registry.metrics(), { headers: { "Content-Type": metrics.registry.contentType } });

  const trustForwarded = config.proxy.trustForwarded;
  const resolveClient = createClientIpResolver({ trustForwarded, trustedProxies: config.limits.trustedProxies });
  // The identity is a pure function of the peer address (and, behind a trusted proxy, of
  // X-Forwarded-For), and the same few peers send nearly every request: parsing and formatting
  // once per peer instead of once per request.
  const identities = new Map<string, string>();
  const clientIdentity = (req: Request, socketIp: string | undefined) => {
    const forwarded = trustForwarded ? req.headers.get("x-forwarded-for") : null;
    const cacheKey = socketIp === undefined || (forwarded !== null && forwarded.length > IDENTITY_CACHE_MAX_HEADER) ? undefined : forwarded === null ? socketIp : `${socketIp}\n${forwarded}`;
    let id = cacheKey === undefined ? undefined : identities.get(cacheKey);
    if (id === undefined) {
      const ip = resolveClient(req, socketIp);
      id = ip ? rateLimitKey(ip) : "unknown";
      if (cacheKey !== undefined) {
        if (identities.size >= IDENTITY_CACHE_ENTRIES) identities.clear();
        identities.set(cacheKey, id);
      }
    }
    return id;
  };
  const serverTokensConfigured = config.serverTokens.length > 0;
  const limits = createRateLimits({
    config: config.limits,
    serverTokensConfigured,
    redis: deps.rateLimitStore,
    logger,
    // Upstream counts a refused POST /api/v1/relay/requests as a terminal outcome.
    onLimited: (route) => route === "/api/v1/relay/requests" && deps.v1Metrics.rateLimited(),
  });

  // One pacer for both protocols: an address's share of paced polls counts all of its polls.
  const pacer = createPacer({
    maxPerAddress: Math.ceil(config.bounds.maxConnections * PACED_POLLS_ADDRESS_SHARE),
    maxTotal: config.bounds.maxConnections,
    onFull: () => metrics.rejections.labels("paced_per_ip_client").inc(),
  });
  const deliver = createDelivery(config.idleTimeoutSeconds);
  const mounts: Mount[] = [
    mount(opsRoutes, { livez: health.livez, healthz: health.healthz, metrics: scrape }),
    ...createV1Mounts({
      store: deps.v1Store,
      notifier: deps.notifier,
      longPoll,
      clientLongPoll,
      metrics: deps.v1Metrics,
      config: config.v1,
      maxBodyBytes: config.maxBodyBytes,
      limits,
      pacer,
      deliver,
      release: { version: VERSION, revision: REVISION, environment: "production" },
      relayFacts: {
        relay_only: config.relayOnly,
        upstream_health_required: config.proxy.requireUpstreamHealth,
        configured_upstream_servers: config.relayOnly ? [] : config.proxy.upstreams.map((u) => u.href),
      },
    }),
    mount(
      brokerRoutes,
      createBrokerHandlers({ store: deps.store, notifier: deps.notifier, longPoll, clientLongPoll, metrics, limits: config.broker, maxBodyBytes: config.maxBodyBytes, pacer, deliver }),
    ),
    // The browser chat page (src/web); off with RELAY_WEB_UI=false, and then / is the JSON 404.
    ...(config.web.enabled ? [createWebMount({ v1Store: deps.v1Store })] : []),
  ];

  // Bun resolves dot segments, `%2e` and `\` before the relay sees a target (req.url), so
  // `/api/..\metrics` arrives as `/metrics`: an Ingress that forwards only `/api/` and `/v1/` does
  // not keep the open operator reads private. Such a request bears the proxy's forwarding header,
  // which a client cannot strip and Prometheus or kubelet scraping the pod directly never sends:
  // without a metrics token, operator reads that came through a proxy are refused.
  const operatorReadsOpen = config.operator.metricsToken === undefined;
  const cameThroughProxy = (req: Request) =>
    req.headers.has("x-forwarded-for") || req.headers.has("forwarded") || req.headers.has("x-real-ip");
  const checkServerToken = createTokenCheck(config.serverTokens);
  const guardOperatorRead = createOperatorReadGuard(config.operator);
  const router = new Router();
  const specs = new Map<string, RouteSpec>();
  for (const { table, handlers } of mounts) {
    for (const [name, spec] of Object.entries(table)) {
      router.on(spec.method, spec.path, wrap(spec, handlers[name]!));
      specs.set(spec.path, spec);
    }
  }

  /** Applies a route's declared policies around its handler, in the order the spec fixes. */
  function wrap(spec: RouteSpec, handler: Handler): Handler {
    // Upstream checks the legacy switch before anything else (spec §12).
    if (spec.legacy && !config.v1.legacyRoutes) {
      return () => {
        throw v1Errors.legacyDeprecated(spec.path);
      };
    }
    const charged = spec.limit !== undefined && config.limits.enabled;
    const tokenChecked = spec.auth === "server-token" && serverTokensConfigured;
    const operatorRead = spec.auth === "metrics-scrape" || spec.auth === "metrics-token";
    // A route without policies is its handler: no wrapper, no extra promise per request.
    if (!charged && !tokenChecked && !operatorRead) return handler;
    return async (req, ctx) => {
      // Rate limits run before the token check (spec §3.1, §11).
      if (charged) await limits.charge(spec, req, ctx);
      if (tokenChecked) {
        // Failed attempts are counted per address; once RELAY_AUTH_FAILURE_LIMIT is spent, the
        // address is refused before any comparison, so tokens cannot be guessed at full speed.
        const attempt = await limits.authAttempt(req, ctx);
        // Nothing awaited between this, the comparison and failed()'s local count: parallel
        // guesses from one address are compared at most up to its limit (AuthAttempt.spent).
        const spent = attempt.spent();
        if (spent) await spent;
        if (!checkServerToken(req.headers.get(SERVER_TOKEN_HEADER)?.trim() ?? null)) {
          await attempt.failed();
          throw v1Errors.unauthorized();
        }
      }
      if (operatorRead) {
        if (operatorReadsOpen && cameThroughProxy(req)) throw operatorReadForwarded();
        guardOperatorRead(spec.auth, req); // /metrics, /relay/diagnostics: 401 without the metrics token
      }
      return handler(req, ctx);
    };
  }

  function dispatch(req: Request, ctx: RequestContext, pathname: string): Promise<Response> | Response {
    if (req.method === "OPTIONS" && specs.get(pathname)?.cors) return new Response(null, { status: 204, headers: PREFLIGHT_HEADERS });
    const match = router.match(req.method, pathname);
    if (match) return match.handler(req, ctx);
    // The relay's own namespace is never forwarded, even for a path it does not serve.
    if (!isReservedPath(pathname) && deps.proxy?.matches(pathname)) return deps.proxy.handle(req, ctx);
    throw notFound(`No route for ${req.method} ${pathname}`);
  }

  /**
   * One request's context. A class, not an object literal with getters: JavaScriptCore builds a
   * literal's accessors on every request, a class's once. The socket address, the client
   * identity and the child logger are only worked out when something asks for them.
   */
  class Context implements RequestContext {
    route: string;
    #log: Logger | undefined;
    #clientId: string | undefined;
    #socketIp: string | undefined;
    #socketIpRead = false;

    constructor(
      readonly requestId: string,
      private readonly req: Request,
      private readonly adapter: ServerAdapter,
      route: string,
    ) {
      this.route = route;
    }

    get log(): Logger {
      return (this.#log ??= logger.child({ reqId: this.requestId }));
    }

    get clientIp(): string | undefined {
      if (!this.#socketIpRead) {
        this.#socketIp = this.adapter.clientIp(this.req);
        this.#socketIpRead = true;
      }
      return this.#socketIp;
    }

    get clientId(): string {
      return (this.#clientId ??= clientIdentity(this.req, this.clientIp));
    }

    get debugEnabled(): boolean {
      return logger.isLevelEnabled("debug");
    }

    /** The idle timeout was changed for this request and not yet restored. */
    held = false;
    /** The response streams past the handler's return; its stream restores the idle timeout. */
    streaming = false;

    holdOpen(seconds?: number): void {
      this.held = true;
      this.adapter.holdOpen(this.req, seconds);
    }

    holdWhileStreaming(seconds?: number): void {
      this.streaming = true;
      this.holdOpen(seconds);
    }

    idleAgain(): void {
      if (!this.held) return;
      this.held = false;
      this.adapter.holdOpen(this.req, config.idleTimeoutSeconds);
    }
  }

  async function fetch(req: Request, adapter: ServerAdapter): Promise<Response> {
    const started = performance.now();
    const requestId = requestIdFor(req);
    let pathname: string;
    let badTarget: RelayError | undefined;
    try {
      pathname = requestPath(req.url);
    } catch (err) {
      // A target without a path (CONNECT's authority-form) routes nowhere: 404; one that is not in
      // normal form (dot segments, backslashes) is refused 400 invalid_path.
      pathname = "";
      if (err instanceof RelayError) badTarget = err;
    }
    const spec = specs.get(pathname);
    const ctx = new Context(requestId, req, adapter, spec ? pathname : "unmatched");
    let res: Response;
    try {
      if (badTarget) throw badTarget;
      // A node route only with a token configured: the token is checked (wrap) before the body is
      // read, so the node's shares (connections, body pool, memory guard) cannot be claimed by a
      // client; with open registration anyone could name a node route and its body counts as a client's.
      const nodeRoute = serverTokensConfigured && spec?.auth === "server-token";
      // A route's body limit (spec.maxBodyBytes) refuses a larger declared body here, unread; a
      // switched-off legacy route answers its own refusal first (spec §12).
      // Paced polls have their own pool (src/common/pacing.ts), so they never take the connections
      // of other clients and nodes.
      const pending = adapter.pendingRequests?.();
      admission.admit(req, spec?.quiet === true, pending === undefined ? undefined : pending - pacer.active, nodeRoute, ctx, spec?.legacy && !config.v1.legacyRoutes ? undefined : spec);
      if (memoryGuard?.shedding) memoryGuard.checkBody(req, nodeRoute);
      res = await dispatch(req, ctx, pathname);
    } catch (err) {
      res = toErrorResponse(err, ctx);
    }
    try {
      decorate(res.headers, requestId, spec);
    } catch {
      // Immutable headers (a Response we did not build): rebuild the head around the same body.
      res = new Response(res.body, { status: res.status, statusText: res.statusText, headers: new Headers(res.headers) });
      decorate(res.headers, requestId, spec);
    }
    // A hold (long-poll, body deadline) changed this connection's idle timeout: Bun keeps it for
    // the connection's later requests, so a kept-alive connection would never idle out.
    if (ctx.held && !ctx.streaming) ctx.idleAgain();
    const seconds = (performance.now() - started) / 1000;
    metrics.observeRequest(req.method, ctx.route, res.status, seconds);
    const quiet = spec?.quiet === true;
    // The line a child bound to reqId writes (test/ops/log-redaction.test.ts), without a child.
    requestLine(quiet ? "debug" : "info", requestId, req.method, ctx.route, res.status, Math.round(seconds * 1e4) / 10);
    return res;
  }

  function decorate(headers: Headers, requestId: string, spec: RouteSpec | undefined): void {
    headers.set(REQUEST_ID_HEADER, requestId);
    if (spec?.cors) for (const [k, v] of CORS_ENTRIES) headers.set(k, v);
    if (spec?.cache) headers.set("Cache-Control", spec.cache);
  }

  function toErrorResponse(err: unknown, ctx: RequestContext): Response {
    if (err instanceof RelayError) {
      if (!COUNTED_BY_HOLDS.has(err.code)) metrics.rejections.labels(err.code).inc();
      if (err.status >= 500) {
        const suppressed = refusalLog.take(err.code);
        if (suppressed !== undefined) ctx.log.warn({ code: err.code, status: err.status, err: err.message, suppressed }, "request failed");
      }
      return errorResponse(err);
    }
    ctx.log.error({ err }, "unhandled error");
    return json(500, { error: { message: "Internal relay error", code: 500, type: "internal_error" } });
  }

  return {
    fetch,
    /** Requests held right now, both budgets together. */
    holds: {
      get waiting() {
        return longPoll.waiting + clientLongPoll.waiting;
      },
    },
    /** Client polls being paced right now (src/common/pacing.ts). */
    paces: {
      get active() {
        return pacer.active;
      },
    },
    routes: router.paths(),
  };
}

export type App = ReturnType<typeof createApp>;
