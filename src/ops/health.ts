import type { Clock } from "../clock.ts";
import { json } from "../http/json.ts";
import type { RouteTable } from "../http/routes.ts";
import type { BrokerStore } from "../broker/types.ts";
import type { V1Store } from "../v1/store.ts";
import type { Lifecycle } from "./lifecycle.ts";

export interface CheckResult {
  ok: boolean;
  detail?: Record<string, unknown>;
}

/** Something readiness depends on (the GPU host name, an upstream probe, the state store). */
export interface ReadinessCheck {
  name: string;
  check(): Promise<CheckResult>;
}

export type ResolveHost = (host: string) => Promise<boolean>;

/** A probe must answer within the kubelet's timeout even when the resolver hangs. */
export const DNS_TIMEOUT_MS = 2_000;

export const resolveWithDns: ResolveHost = async (host) => {
  // Loaded here, not at start, with node:dns below: a relay-only deployment never resolves anything.
  const { isIP } = require("node:net") as typeof import("node:net");
  if (isIP(host)) return true;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), DNS_TIMEOUT_MS)));
  try {
    // Loaded here, not at start: a relay-only deployment never resolves anything.
    const { lookup } = await import("node:dns/promises");
    return await Promise.race([lookup(host).then(() => true, () => false), timeout]);
  } finally {
    clearTimeout(timer);
  }
};

/**
 * Readiness fails while no GPU host name resolves (with several upstreams, one is enough: the
 * proxy fails over); probes arrive every few seconds from every kubelet, so the answer is cached
 * for `cacheMs`.
 */
export function gpuHostCheck(hosts: readonly string[], resolve: ResolveHost, clock: Clock, cacheMs: number): ReadinessCheck {
  const anyResolves = async () => (await Promise.all(hosts.map(resolve))).some(Boolean);
  let cached: { at: number; ok: boolean } | undefined;
  let inflight: Promise<boolean> | undefined;
  return {
    name: "gpuHost",
    async check() {
      const now = clock.now();
      if (!cached || now - cached.at >= cacheMs) {
        inflight ??= anyResolves().finally(() => (inflight = undefined));
        cached = { at: now, ok: await inflight };
      }
      return { ok: cached.ok, detail: { gpuHostResolves: cached.ok } };
    },
  };
}

/**
 * Probe and scrape routes: logged at debug so they do not drown the request log. /metrics is a
 * private operator read (TOKENPLACE_METRICS_TOKEN, TOKENPLACE_METRICS_DISABLED: spec §6.11).
 */
export const opsRoutes = {
  livez: { method: "GET", path: "/livez", quiet: true },
  healthz: { method: "GET", path: "/healthz", quiet: true },
  metrics: { method: "GET", path: "/metrics", quiet: true, cache: "no-store", auth: "metrics-scrape" },
} as const satisfies RouteTable;

export interface HealthDeps {
  lifecycle: Lifecycle;
  store: BrokerStore;
  v1Store: V1Store;
  checks: ReadinessCheck[];
  facts: { upstream: string; gpuHost: string; relayOnly: boolean; version: string };
}

export function createHealthHandlers(deps: HealthDeps) {
  function livez(): Response {
    return json(200, { status: "alive" });
  }

  async function healthz(): Promise<Response> {
    const [stats, v1] = await Promise.all([deps.store.stats().catch(() => undefined), deps.v1Store.stats().catch(() => undefined)]);
    const results = await Promise.all(
      deps.checks.map(async (c) => {
        try {
          return { name: c.name, ...(await c.check()) };
        } catch (err) {
          return { name: c.name, ok: false, detail: { error: String(err) } };
        }
      }),
    );
    const failing = results.filter((r) => !r.ok).map((r) => r.name);
    if (!stats || !v1) failing.push("store");
    const status = deps.lifecycle.draining ? "draining" : failing.length > 0 ? "degraded" : "ok";
    const body: Record<string, unknown> = {
      status,
      upstream: deps.facts.upstream,
      gpuHost: deps.facts.gpuHost,
      // Compute nodes of both protocols (API v1 and legacy /sink).
      knownServers: (stats?.nodes ?? 0) + (v1?.nodes ?? 0),
      relayOnly: deps.facts.relayOnly,
      version: deps.facts.version,
    };
    for (const r of results) Object.assign(body, r.detail);
    if (failing.length > 0) body.failing = failing;
    if (status === "draining") return json(503, body, { "Retry-After": "0", "Cache-Control": "no-store" });
    return json(status === "ok" ? 200 : 503, body);
  }

  return { livez, healthz };
}
