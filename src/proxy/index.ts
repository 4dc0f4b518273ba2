import type { Logger } from "pino";
import type { ProxyRoute } from "../app.ts";
import { systemClock, type Clock } from "../clock.ts";
import type { Config } from "../config/index.ts";
import { badGateway, methodNotAllowed } from "../errors.ts";
import { bodyPolicy } from "../http/body-budget.ts";
import type { RequestContext } from "../http/context.ts";
import type { ReadinessCheck } from "../ops/health.ts";
import type { Lifecycle } from "../ops/lifecycle.ts";
import type { Metrics } from "../ops/metrics.ts";
import { prepareBody, type UploadBounds } from "./body.ts";
import { Exchange } from "./exchange.ts";
import { COUNTED_KINDS, errorForKind, mayFailOver, type FailureKind } from "./failure.ts";
import { UpstreamFailure, openUpstream, statusClass, type FetchFn } from "./forward.ts";
import { clientResponseHeaders, upstreamRequestHeaders } from "./headers.ts";
import { createUpstreamProbe } from "./health-probe.ts";
import { relayBody } from "./stream.ts";
import { buildUpstreamUrl, createTargetMatcher } from "./target.ts";
import { createUpstreamPool, type Upstream } from "./upstreams.ts";
import { createUploadSlots } from "./uploads.ts";
import { Watchdog, watchdogTickMs } from "./watchdog.ts";

export interface ProxyDeps {
  config: Config;
  metrics: Metrics;
  logger: Logger;
  lifecycle: Lifecycle;
  /** Defaults to globalThis.fetch; tests inject a fake to drive the handler without sockets. */
  fetch?: FetchFn;
  clock?: Clock;
  /** Where BUN_CONFIG_MAX_HTTP_REQUESTS is looked up (for the start-up warning only). */
  env?: Readonly<Record<string, string | undefined>>;
  /** Start the background health probe (default true). */
  probe?: boolean;
}

/** CONNECT would make the relay a tunnel; TRACE reflects request headers (cookies, tokens). */
const ALLOWED_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/** Failures that say the upstream itself is unwell, so round robin should skip it for a while. */
const EJECTING: ReadonlySet<FailureKind> = new Set(["connect", "dns", "timeout", "reset"]);

const NOTHING_TO_RELEASE = () => {};
/** A request without a body: no upload slot, no deadline (one shared object, not one per GET). */
const NO_UPLOAD: UploadBounds = { deadline: Number.POSITIVE_INFINITY, done: NOTHING_TO_RELEASE };

/** Bun's fetch runs at most this many requests at once unless BUN_CONFIG_MAX_HTTP_REQUESTS says otherwise. */
const BUN_DEFAULT_MAX_FETCHES = 256;

/**
 * Proxy mode: requests under the configured prefixes stream to the GPU upstream and
 * back. One concern per file: target (where), headers (what is sent), body (request stream and
 * limit), forward (one fetch until the head), stream (response pump), upstreams (round robin and
 * ejection), health-probe (readiness), failure (error kinds and their answers).
 */
export function createProxyRoute(deps: ProxyDeps): ProxyRoute & { readiness?: ReadinessCheck; close?(): void } {
  const { config, metrics, logger, lifecycle } = deps;
  const p = config.proxy;
  const fetchFn = deps.fetch ?? globalThis.fetch;
  const clock = deps.clock ?? systemClock;
  const matcher = createTargetMatcher(p.prefixes);
  const pool = createUpstreamPool(p.upstreams, clock, p.ejectMs);
  const uploads = createUploadSlots(config.bounds.proxyMaxUploadsPerIp);
  const probe = createUpstreamProbe({
    upstreams: pool.all,
    healthPath: p.healthPath,
    intervalMs: p.healthIntervalMs,
    required: p.requireUpstreamHealth,
    fetch: fetchFn,
    clock,
    metrics,
    logger,
  });
  if (deps.probe !== false) probe.start();
  const watchdog = new Watchdog(watchdogTickMs([p.firstByteTimeoutMs, p.idleTimeoutMs]), lifecycle.hardStopSignal);
  const timers = { idleMs: p.idleTimeoutMs, firstByteMs: p.firstByteTimeoutMs };

  const env = deps.env ?? process.env;
  if (env.BUN_CONFIG_MAX_HTTP_REQUESTS === undefined) {
    logger.warn(
      { limit: BUN_DEFAULT_MAX_FETCHES },
      "BUN_CONFIG_MAX_HTTP_REQUESTS is not set: proxied requests beyond 256 at once queue inside Bun's fetch",
    );
  }

  async function handle(req: Request, ctx: RequestContext): Promise<Response> {
    const target = matcher.resolve(req.url);
    ctx.route = `${target.prefix}*`;
    if (!ALLOWED_METHODS.includes(req.method)) throw methodNotAllowed(ALLOWED_METHODS);
    // Bun's idleTimeout (<= 255 s) also runs while a handler awaits; our watchdogs replace it.
    ctx.holdOpen();

    // An upload holds a slot of its client address until its body is in (src/proxy/uploads.ts),
    // taken before a byte of it is read; the deadline counts from the request's arrival.
    const hasBody = req.body !== null && req.headers.get("content-length") !== "0";
    const release = hasBody ? uploads.acquire(ctx.clientId) : NOTHING_TO_RELEASE;
    const upload = hasBody ? { deadline: bodyPolicy(req)?.deadline ?? performance.now() + config.bounds.bodyTimeoutMs, done: release } : NO_UPLOAD;
    try {
      return await forward(req, ctx, target, upload);
    } catch (err) {
      release();
      throw err;
    }
  }

  async function forward(
    req: Request,
    ctx: RequestContext,
    target: ReturnType<typeof matcher.resolve>,
    upload: UploadBounds,
  ): Promise<Response> {
    // Without a body (every GET) prepareBody answers at once: no await, no promise.
    const prepared = prepareBody(req, config.maxBodyBytes, metrics, timers, upload);
    const body = prepared instanceof Promise ? await prepared : prepared;
    const headers = upstreamRequestHeaders(req.headers, {
      clientIp: ctx.clientIp,
      proto: req.url.startsWith("https:") ? "https" : "http",
      host: req.headers.get("host"),
      requestId: ctx.requestId,
      trustForwarded: p.trustForwarded,
    });

    const plan = pool.all.length > 1 ? pool.plan() : pool.all;
    for (let i = 0; ; i++) {
      const upstream = plan[i]!;
      const ex = new Exchange(req.signal, watchdog);
      const started = performance.now();
      let res: Response;
      try {
        res = await openUpstream({
          fetch: fetchFn,
          url: buildUpstreamUrl(upstream.root, target),
          method: req.method,
          headers,
          body: body.forAttempt(ex),
          ex,
          firstByteMs: p.firstByteTimeoutMs,
        });
      } catch (err) {
        ex.dispose();
        if (!(err instanceof UpstreamFailure)) throw err;
        const kind = err.kind;
        metrics.upstreamRequests.labels("error").inc();
        if (COUNTED_KINDS.has(kind)) metrics.upstreamErrors.labels(kind).inc();
        if (EJECTING.has(kind)) pool.failed(upstream);
        const failOver = i + 1 < plan.length && mayFailOver(kind, req.method, body.replayable);
        const line = { upstream: upstream.label, kind, err: err.message, failOver };
        if (kind === "client_abort" || kind === "too_large" || kind === "upload_timeout") ctx.log.info(line, "proxied request ended before the response head");
        else ctx.log.warn(line, "upstream request failed");
        if (failOver) continue;
        throw errorForKind(kind, config.maxBodyBytes, config.bounds.bodyTimeoutMs);
      }
      pool.succeeded(upstream);
      metrics.upstreamTtfb.observe((performance.now() - started) / 1000);
      metrics.upstreamRequests.labels(statusClass(res.status)).inc();
      return respond(req, res, ex, upstream, ctx);
    }
  }

  function respond(req: Request, res: Response, ex: Exchange, upstream: Upstream, ctx: RequestContext): Response {
    // 101 would need a tunnel (Upgrade is stripped on the way up, so only a broken upstream sends it).
    if (res.status < 200 || res.status > 599) {
      ex.abort("reset");
      ex.dispose();
      throw badGateway("upstream_bad_status", `Upstream answered with status ${res.status}`);
    }
    const init = { status: res.status, statusText: res.statusText, headers: clientResponseHeaders(res.headers) };
    if (!res.body || req.method === "HEAD") {
      ex.dispose();
      res.body?.cancel().catch(() => {});
      return new Response(null, init);
    }
    // The stream outlives the handler: it restores the connection's idle timeout when it completes.
    ctx.holdWhileStreaming();
    const stream = relayBody(res.body, {
      ex,
      idleMs: p.idleTimeoutMs,
      metrics,
      ctx,
      debug: ctx.debugEnabled,
      upstream: upstream.label,
    });
    return new Response(stream, init);
  }

  return {
    matches: (pathname) => matcher.matchPrefix(pathname) !== undefined,
    handle,
    readiness: probe.readiness,
    close: () => {
      probe.close();
      watchdog.close();
    },
  };
}
