import type { Logger } from "pino";
import { createBrokerHandlers } from "./broker/handlers.ts";
import { createLongPoll } from "./broker/long-poll.ts";
import { createTokenCheck } from "./broker/tokens.ts";
import type { BrokerStore, Notifier } from "./broker/types.ts";
import type { Config } from "./config/index.ts";
import { RelayError, notFound } from "./errors.ts";
import type { RequestContext } from "./http/context.ts";
import { errorResponse, json } from "./http/json.ts";
import { REQUEST_ID_HEADER, requestIdFor } from "./http/request-id.ts";
import { Router } from "./http/router.ts";
import { createHealthHandlers, type ReadinessCheck } from "./ops/health.ts";
import type { Lifecycle } from "./ops/lifecycle.ts";
import type { Metrics } from "./ops/metrics.ts";
import { VERSION } from "./version.ts";

/** What the proxy feature plugs into the app (src/proxy). */
export interface ProxyRoute {
  matches(pathname: string): boolean;
  handle(req: Request, ctx: RequestContext): Promise<Response>;
}

/** What only the server adapter knows about a request. */
export interface ServerAdapter {
  clientIp(req: Request): string | undefined;
  holdOpen(req: Request): void;
}

export interface AppDeps {
  config: Config;
  store: BrokerStore;
  notifier: Notifier;
  logger: Logger;
  metrics: Metrics;
  lifecycle: Lifecycle;
  checks: ReadinessCheck[];
  proxy?: ProxyRoute;
}

/** Probe and scrape traffic is logged at debug so it does not drown the request log. */
const QUIET_ROUTES = new Set(["/livez", "/healthz", "/metrics"]);

export function createApp(deps: AppDeps) {
  const { config, metrics, logger } = deps;
  const longPoll = createLongPoll({
    notifier: deps.notifier,
    metrics,
    holdMs: config.broker.longPollMs,
    maxWaiting: config.broker.maxLongPolls,
    drainSignal: deps.lifecycle.drainSignal,
  });
  const broker = createBrokerHandlers({
    store: deps.store,
    notifier: deps.notifier,
    longPoll,
    metrics,
    limits: config.broker,
    maxBodyBytes: config.maxBodyBytes,
    checkToken: createTokenCheck(config.serverTokens),
  });
  const health = createHealthHandlers({
    lifecycle: deps.lifecycle,
    store: deps.store,
    checks: deps.checks,
    facts: { upstream: config.upstreamUrl.href, gpuHost: config.gpuHost, relayOnly: config.relayOnly, version: VERSION },
  });
  const scrape = async () =>
    new Response(await metrics.registry.metrics(), { headers: { "Content-Type": metrics.registry.contentType } });

  const router = new Router()
    .on("GET", "/next_server", broker.nextServer)
    .on("POST", "/faucet", broker.faucet)
    .on("POST", "/sink", broker.sink)
    .on("POST", "/source", broker.source)
    .on("POST", "/retrieve", broker.retrieve)
    .on("POST", "/stream/source", broker.streamSource)
    .on("POST", "/stream/retrieve", broker.streamRetrieve)
    .on("GET", "/livez", health.livez)
    .on("GET", "/healthz", health.healthz)
    .on("GET", "/metrics", scrape);

  async function dispatch(req: Request, ctx: RequestContext, pathname: string): Promise<Response> {
    const match = router.match(req.method, pathname);
    if (match) return match.handler(req, ctx);
    if (deps.proxy?.matches(pathname)) return deps.proxy.handle(req, ctx);
    throw notFound(`No route for ${req.method} ${pathname}`);
  }

  async function fetch(req: Request, adapter: ServerAdapter): Promise<Response> {
    const started = performance.now();
    const requestId = requestIdFor(req);
    let pathname: string;
    try {
      pathname = new URL(req.url).pathname;
    } catch {
      pathname = "/";
    }
    let log: Logger | undefined;
    const ctx: RequestContext = {
      requestId,
      // Created on first use: most requests log one line or none, and a child costs ~1 µs.
      get log() {
        return (log ??= logger.child({ reqId: requestId }));
      },
      clientIp: adapter.clientIp(req),
      holdOpen: () => adapter.holdOpen(req),
      route: router.has(pathname) ? pathname : "unmatched",
    };
    let res: Response;
    try {
      res = await dispatch(req, ctx, pathname);
    } catch (err) {
      res = toErrorResponse(err, ctx);
    }
    try {
      res.headers.set(REQUEST_ID_HEADER, requestId);
    } catch {
      // Immutable headers (a Response we did not build): rebuild the head around the same body.
      res = new Response(res.body, { status: res.status, statusText: res.statusText, headers: new Headers(res.headers) });
      res.headers.set(REQUEST_ID_HEADER, requestId);
    }
    const seconds = (performance.now() - started) / 1000;
    metrics.observeRequest(req.method, ctx.route, res.status, seconds);
    const quiet = QUIET_ROUTES.has(ctx.route);
    if (logger.isLevelEnabled(quiet ? "debug" : "info")) {
      const line = { method: req.method, route: ctx.route, status: res.status, durationMs: Math.round(seconds * 1e4) / 10 };
      if (quiet) ctx.log.debug(line, "request");
      else ctx.log.info(line, "request");
    }
    return res;
  }

  function toErrorResponse(err: unknown, ctx: RequestContext): Response {
    if (err instanceof RelayError) {
      metrics.rejections.labels(err.code).inc();
      if (err.status >= 500) ctx.log.warn({ code: err.code, status: err.status, err: err.message }, "request failed");
      return errorResponse(err);
    }
    ctx.log.error({ err }, "unhandled error");
    return json(500, { error: { message: "Internal relay error", code: 500, type: "internal_error" } });
  }

  return { fetch, longPoll, routes: router.paths() };
}

export type App = ReturnType<typeof createApp>;
