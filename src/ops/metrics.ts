import type * as PromClient from "prom-client";
import { Counter, Gauge, Histogram, Registry, loadCollectDefaultMetrics } from "./prom.ts";
import { KNOWN_METHODS } from "../http/methods.ts";
import { REVISION, VERSION } from "../version.ts";

const P = "tokenplace_relay_";

/**
 * prom-client's default metrics that are false under Bun (prometheus/client_js#623): GC is never
 * sampled, handle/request/resource counts are always 0, heap spaces are synthetic,
 * process_heap_bytes is the virtual size, and nodejs_version_info claims a Node version.
 */
export const UNTRUE_UNDER_BUN = [
  "nodejs_gc_duration_seconds",
  "nodejs_active_handles",
  "nodejs_active_handles_total",
  "nodejs_active_requests",
  "nodejs_active_requests_total",
  "nodejs_active_resources",
  "nodejs_active_resources_total",
  "nodejs_heap_space_size_total_bytes",
  "nodejs_heap_space_size_used_bytes",
  "nodejs_heap_space_size_available_bytes",
  "process_heap_bytes",
  "nodejs_version_info",
];

/** Point-in-time numbers read at scrape time (store sizes, server counters). */
export interface GaugeSources {
  registeredNodes?: () => Promise<number> | number;
  queuedJobs?: () => Promise<number> | number;
  maxQueueDepth?: () => Promise<number> | number;
  pendingAnswers?: () => Promise<number> | number;
  streamSessions?: () => Promise<number> | number;
  serverPendingRequests?: () => number;
}

export type Metrics = ReturnType<typeof createMetrics>;

/** Buckets of tokenplace_relay_http_request_duration_seconds. */
const HTTP_DURATION_BUCKETS: readonly number[] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * The entries prom-client keeps for one label set (prom-client 15: `hashMap[hash]` of a Counter
 * is `{ value, labels }`, of a Histogram `{ labels, bucketValues, sum, count }` with per-bucket,
 * not cumulative, counts; the exposition sums them). `current()` says whether the metric still
 * holds these very entries (a reset replaces them), else the caller starts over through the API.
 */
interface RequestSeries {
  count: { value: number };
  duration: { sum: number; count: number; bucketValues: Record<number, number> };
  current(): boolean;
}

type HashMapped = { hashMap: Record<string, unknown>; sortedLabelNames: string[] };
const { hashObject } = require("prom-client/lib/util") as { hashObject(labels: Record<string, string>, names: string[]): string };

function requestSeries(counter: PromClient.Counter<string>, histogram: PromClient.Histogram<string>, labels: Record<string, string>): RequestSeries | undefined {
  const c = counter as unknown as HashMapped;
  const h = histogram as unknown as HashMapped;
  const ch = hashObject(labels, c.sortedLabelNames);
  const hh = hashObject(labels, h.sortedLabelNames);
  const count = c.hashMap[ch] as RequestSeries["count"] | undefined;
  const duration = h.hashMap[hh] as RequestSeries["duration"] | undefined;
  // Not the shape this relies on (another prom-client): no fast path, the API every time.
  if (typeof count?.value !== "number" || typeof duration?.sum !== "number" || typeof duration.bucketValues !== "object") return undefined;
  return { count, duration, current: () => c.hashMap[ch] === count && h.hashMap[hh] === duration };
}

/**
 * One label set of a counter as a function that adds to it: the entry prom-client keeps for it
 * (see RequestSeries) is found once and then added to directly, for the counters a request bumps
 * (long-poll outcomes, API v1 outcomes), where `labels(...).inc()` validated, hashed and bound
 * again every time. A reset of the metric, or another prom-client, falls back to the API.
 */
export function counterChild(counter: PromClient.Counter<string>, labels: Record<string, string>): (n?: number) => void {
  const c = counter as unknown as HashMapped;
  let hash: string | undefined;
  let entry: { value: number } | undefined;
  return (n = 1) => {
    if (entry !== undefined && c.hashMap[hash!] === entry) {
      entry.value += n;
      return;
    }
    counter.inc(labels, n);
    hash ??= hashObject(labels, c.sortedLabelNames);
    const found = c.hashMap?.[hash] as { value?: unknown } | undefined;
    entry = typeof found?.value === "number" ? (found as { value: number }) : undefined;
  };
}

/**
 * counterChild for every label set of a counter, each made the first time its values are counted:
 * `count(...values)` adds one to the series of those label values (in `labelNames` order). For
 * counters with a few dozen label sets at most (fixed enums, route templates), bumped per request.
 */
export function counterChildren(counter: PromClient.Counter<string>, labelNames: readonly string[]): (...values: string[]) => void {
  const children = new Map<string, (n?: number) => void>();
  return (...values) => {
    const key = values.length === 1 ? values[0]! : values.join("\n");
    let child = children.get(key);
    if (child === undefined) {
      const labels: Record<string, string> = {};
      labelNames.forEach((name, i) => (labels[name] = values[i]!));
      children.set(key, (child = counterChild(counter, labels)));
    }
    child();
  };
}

type ProxyDirection = "request" | "response";
const PROXY_DIRECTIONS: readonly ProxyDirection[] = ["request", "response"];

/**
 * The process metrics are registered this long after start, or at the first scrape if that comes
 * sooner: loading and registering them was a visible share of the binary's start-up, and nothing
 * reads them before a scrape.
 */
export const PROCESS_METRICS_DELAY_MS = 1_000;

export function createMetrics(registry: Registry = new Registry(), opts: { processMetrics?: boolean } = {}) {
  let processMetricsPending = opts.processMetrics !== false;
  const registerProcessMetrics = () => {
    if (!processMetricsPending) return;
    processMetricsPending = false;
    loadCollectDefaultMetrics()({ register: registry });
    for (const name of UNTRUE_UNDER_BUN) registry.removeSingleMetric(name);
  };
  if (processMetricsPending) {
    setTimeout(registerProcessMetrics, PROCESS_METRICS_DELAY_MS).unref();
    // Every reader of the registry (the /metrics route, tests) sees them, however early it asks.
    const render = registry.metrics.bind(registry);
    registry.metrics = () => {
      registerProcessMetrics();
      return render();
    };
  }
  const sources: GaugeSources = {};
  // A proxied stream counts its bytes per chunk: a number added here, instead of prom-client's
  // label lookup and hashing per chunk; the counter takes them over whenever it is read.
  const pendingProxyBytes: Record<ProxyDirection, number> = { request: 0, response: 0 };
  const fromSource = (name: string, help: string, key: keyof GaugeSources) =>
    new Gauge({
      name: P + name,
      help,
      registers: [registry],
      async collect() {
        const read = sources[key];
        if (read) this.set(await read());
      },
    });

  const m = {
    registry,
    sources,
    build: new Gauge({ name: P + "build_info", help: "Relay version and revision (always 1).", labelNames: ["version", "revision"], registers: [registry] }),
    httpRequests: new Counter({
      name: P + "http_requests_total",
      help: "HTTP requests served, by method, route template and status.",
      labelNames: ["method", "route", "status"],
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: P + "http_request_duration_seconds",
      help: "Time to the response head (long-polls include their hold), by method, route template and status.",
      labelNames: ["method", "route", "status"],
      buckets: [...HTTP_DURATION_BUCKETS],
      registers: [registry],
    }),
    rejections: new Counter({
      name: P + "rejections_total",
      help: "Requests refused by a limit or validation, by reason.",
      labelNames: ["reason"],
      registers: [registry],
    }),
    expired: new Counter({
      name: P + "expired_total",
      help: "Items dropped by expiry, by kind (node, job, answer, stream).",
      labelNames: ["kind"],
      registers: [registry],
    }),
    longPollsWaiting: new Gauge({
      name: P + "long_polls_waiting",
      help: "Requests currently held open waiting for work, by route template.",
      labelNames: ["route"],
      registers: [registry],
    }),
    longPollOutcomes: new Counter({
      name: P + "long_poll_outcomes_total",
      help: "How held requests ended (woken, timeout, aborted, draining, overflow), by route template.",
      labelNames: ["route", "outcome"],
      registers: [registry],
    }),
    jobsDispatched: new Counter({ name: P + "jobs_dispatched_total", help: "Jobs handed to compute nodes.", registers: [registry] }),
    registeredNodes: fromSource("registered_nodes", "Compute nodes seen within the stale timeout.", "registeredNodes"),
    queuedJobs: fromSource("queued_jobs", "Jobs waiting for a compute node, all nodes together.", "queuedJobs"),
    queueDepthMax: fromSource("queue_depth_max", "Deepest single node queue.", "maxQueueDepth"),
    pendingAnswers: fromSource("pending_answers", "Answers waiting for their client.", "pendingAnswers"),
    streamSessions: fromSource("stream_sessions", "Open stream sessions.", "streamSessions"),
    serverPending: fromSource("server_pending_requests", "Requests the HTTP server is handling right now (Bun server.pendingRequests).", "serverPendingRequests"),
    // Proxy mode.
    upstreamRequests: new Counter({
      name: P + "upstream_requests_total",
      help: "Proxied requests by upstream response status class (2xx..5xx, or error).",
      labelNames: ["class"],
      registers: [registry],
    }),
    upstreamTtfb: new Histogram({
      name: P + "upstream_ttfb_seconds",
      help: "Time from sending a proxied request to the upstream's response head.",
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [registry],
    }),
    proxyActiveStreams: new Gauge({ name: P + "proxy_active_streams", help: "Proxied responses currently streaming.", registers: [registry] }),
    proxyBytes: new Counter({
      name: P + "proxy_bytes_total",
      help: "Body bytes proxied, by direction (request = to upstream, response = to client).",
      labelNames: ["direction"],
      registers: [registry],
      collect() {
        // Bytes counted per chunk (countProxyBytes) are added here, when the counter is read.
        for (const direction of PROXY_DIRECTIONS) {
          if (pendingProxyBytes[direction] > 0) this.inc({ direction }, pendingProxyBytes[direction]);
          pendingProxyBytes[direction] = 0;
        }
      },
    }),
    upstreamErrors: new Counter({
      name: P + "upstream_errors_total",
      help: "Proxy failures by kind (connect, dns, timeout, idle, client_idle, reset, client_abort).",
      labelNames: ["kind"],
      registers: [registry],
    }),
    upstreamUp: new Gauge({
      name: P + "upstream_up",
      help: "1 when the last health probe of an upstream succeeded.",
      labelNames: ["upstream"],
      registers: [registry],
    }),
  };
  m.build.labels(VERSION, REVISION).set(1);

  // Label sets are few (method x route template x status): each gets its prom-client entries
  // once (requestSeries), and a request then adds to them directly. prom-client's own path hashes
  // and validates the labels on every call, ~2 µs of every request (test/ops/metrics-fast-path.test.ts
  // holds both paths to the same exposition).
  const series = new Map<string, RequestSeries | undefined>();
  const bounds = HTTP_DURATION_BUCKETS;
  function observeRequest(rawMethod: string, route: string, status: number, seconds: number): void {
    // The method is the client's choice: anything unusual shares one label value.
    const method = KNOWN_METHODS.has(rawMethod) ? rawMethod : "other";
    const key = `${method} ${route} ${status}`;
    const s = series.get(key);
    if (s === undefined || !s.current()) {
      const labels = { method, route, status: String(status) };
      m.httpRequests.inc(labels);
      m.httpDuration.observe(labels, seconds);
      series.set(key, requestSeries(m.httpRequests, m.httpDuration, labels));
      return;
    }
    s.count.value += 1;
    const d = s.duration;
    d.sum += seconds;
    d.count += 1;
    for (let i = 0; i < bounds.length; i++) {
      if (seconds <= bounds[i]!) {
        d.bucketValues[bounds[i]!]! += 1;
        break;
      }
    }
  }
  const countProxyBytes = (direction: ProxyDirection, n: number) => {
    pendingProxyBytes[direction] += n;
  };
  return { ...m, observeRequest, countProxyBytes };
}
