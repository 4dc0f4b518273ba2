import type { Server } from "bun";
import type { Logger } from "pino";
import { Registry } from "./ops/prom.ts";
import { createApp, type App, type ProxyRoute } from "./app.ts";
import type { BrokerStore, ExpiredKind, Notifier, StoreStats } from "./broker/types.ts";
import { systemClock, type Clock } from "./clock.ts";
import type { Config } from "./config/index.ts";
import { createLogger, lifecycleLogger } from "./log.ts";
import { gpuHostCheck, resolveWithDns, type ReadinessCheck, type ResolveHost } from "./ops/health.ts";
import { Lifecycle } from "./ops/lifecycle.ts";
import { createMemoryGuard, type MemoryGuard } from "./ops/memory-guard.ts";
import { createMetrics, type Metrics } from "./ops/metrics.ts";
import { serve } from "./server.ts";
import { createStateBackend } from "./state/backend.ts";
import { createV1Metrics } from "./v1/index.ts";
import type { V1Events, V1Store } from "./v1/store.ts";

export interface RelayOverrides {
  clock?: Clock;
  logger?: Logger;
  registry?: Registry;
  store?: BrokerStore;
  /** Built with the metrics' event sink, so expiry and eviction are counted. */
  v1Store?: (events: V1Events) => V1Store;
  notifier?: Notifier;
  resolveHost?: ResolveHost;
  /** Registering process metrics twice in one process fails; tests turn them off. */
  processMetrics?: boolean;
  proxy?: (deps: { config: Config; metrics: Metrics; logger: Logger; lifecycle: Lifecycle }) => ProxyRoute & { readiness?: ReadinessCheck; close?(): void };
  /** What the memory guard reads as this process's RSS (tests drive its levels); default the real RSS. */
  readRss?: () => number;
}

export interface Relay {
  readonly url: string;
  readonly port: number;
  readonly server: Server<undefined>;
  readonly app: App;
  readonly metrics: Metrics;
  readonly lifecycle: Lifecycle;
  readonly store: BrokerStore;
  readonly v1Store: V1Store;
  readonly logger: Logger;
  readonly memoryGuard: MemoryGuard;
  /** Drain: readiness off, held polls answered, in-flight work finishes, then the listener closes. */
  shutdown(reason?: string): Promise<void>;
}

/** The composition root: builds every part from the config and starts listening. */
export function startRelay(config: Config, o: RelayOverrides = {}): Relay {
  const clock = o.clock ?? systemClock;
  const logger = o.logger ?? createLogger(config.logLevel);
  const metrics = createMetrics(o.registry ?? new Registry(), { processMetrics: o.processMetrics });
  const lifecycle = new Lifecycle();
  // The metrics read the store and the store reports to the metrics: tie the knot through a closure.
  let storeRef: V1Store | undefined;
  const v1Metrics = createV1Metrics(metrics.registry, () => storeRef!.stats());
  const onExpire = (kind: ExpiredKind, n: number) => metrics.expired.labels(kind).inc(n);
  const backend = createStateBackend(config, { clock: o.clock, systemClock, v1Events: v1Metrics.events, onExpire });
  const store = o.store ?? backend.store;
  const notifier = o.notifier ?? backend.notifier;
  const v1Store: V1Store = o.v1Store?.(v1Metrics.events) ?? backend.v1Store;
  storeRef = v1Store;

  const checks: ReadinessCheck[] = [];
  if (backend.readiness) checks.push(backend.readiness);
  if (!config.relayOnly) {
    const hosts = [...new Set(config.proxy.upstreams.map((u) => u.hostname.replace(/^\[|\]$/g, "")))];
    checks.push(gpuHostCheck(hosts, o.resolveHost ?? resolveWithDns, clock, config.dnsCacheMs));
  }
  const proxy = !config.relayOnly && o.proxy ? o.proxy({ config, metrics, logger, lifecycle }) : undefined;
  if (proxy?.readiness) checks.push(proxy.readiness);

  // The guard starts before the server exists; it reads the open requests once the server does.
  let openRequests = () => 0;
  const memoryGuard = createMemoryGuard({ budget: config.memory, registry: metrics.registry, logger, readRss: o.readRss, pending: () => openRequests() });
  checks.push(memoryGuard.healthCheck);
  const app = createApp({ config, store, v1Store, v1Metrics, notifier, logger, metrics, lifecycle, checks, proxy, rateLimitStore: backend.rateLimitStore, memoryGuard });
  const server = serve(app, config);
  metrics.sources.serverPendingRequests = () => server.pendingRequests;
  openRequests = () => server.pendingRequests;
  // Five gauges read the same numbers during one scrape: take them from one store read.
  let statsRead: { at: number; stats: Promise<StoreStats> } | undefined;
  const stats = () => {
    const now = performance.now();
    if (!statsRead || now - statsRead.at > 100) statsRead = { at: now, stats: store.stats() };
    return statsRead.stats;
  };
  metrics.sources.registeredNodes = async () => (await stats()).nodes;
  metrics.sources.queuedJobs = async () => (await stats()).queuedJobs;
  metrics.sources.maxQueueDepth = async () => (await stats()).maxQueueDepth;
  metrics.sources.pendingAnswers = async () => (await stats()).answers;
  metrics.sources.streamSessions = async () => (await stats()).streams;

  const sweeper = setInterval(() => {
    store.sweep().catch((err) => logger.error({ err }, "sweep failed"));
    v1Store.sweep().catch((err) => logger.error({ err }, "API v1 sweep failed"));
  }, config.broker.sweepIntervalMs);
  sweeper.unref();

  const port = server.port ?? config.port;
  const host = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host;
  let stopping: Promise<void> | undefined;

  async function drain(reason: string): Promise<void> {
    const t0 = performance.now();
    const events = lifecycleLogger(logger);
    events.info({ reason, delayMs: config.shutdownDelayMs, graceMs: config.shutdownGraceMs }, "draining");
    lifecycle.beginDrain();
    if (config.shutdownDelayMs > 0) await Bun.sleep(config.shutdownDelayMs);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const graceOver = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), config.shutdownGraceMs)));
    const finished = await Promise.race([server.stop(false).then(() => "done" as const), graceOver]);
    clearTimeout(timer);
    if (finished === "timeout") {
      logger.warn({ pending: server.pendingRequests }, "grace period over, closing remaining connections");
      lifecycle.hardStop();
      await server.stop(true);
    }
    clearInterval(sweeper);
    memoryGuard.close();
    proxy?.close?.();
    // In-memory state ends with the process: say what was still waiting, so it is not lost silently.
    // In Valkey it stays for the other replicas (and this one's successor).
    if (backend.losesStateAtStop) {
      const left = await store.stats().catch(() => undefined);
      if (left && left.queuedJobs + left.answers + left.streams > 0) {
        events.warn({ queuedJobs: left.queuedJobs, pendingAnswers: left.answers, streamSessions: left.streams }, "state discarded at stop");
      }
      const v1Left = await v1Store.stats().catch(() => undefined);
      if (v1Left && v1Left.queued + v1Left.inFlight + v1Left.answers > 0) {
        events.warn({ v1Queued: v1Left.queued, v1InFlight: v1Left.inFlight, v1StoredAnswers: v1Left.answers }, "API v1 state discarded at stop");
      }
    }
    await store.close();
    await v1Store.close().catch(() => undefined);
    await backend.close();
    events.info({ durationMs: Math.round(performance.now() - t0) }, "stopped");
  }

  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    port,
    server,
    app,
    metrics,
    lifecycle,
    store,
    v1Store,
    logger,
    memoryGuard,
    shutdown: (reason = "shutdown") => (stopping ??= drain(reason)),
  };
}
