import type { Logger } from "pino";
import type { Clock } from "../clock.ts";
import type { CheckResult, ReadinessCheck } from "../ops/health.ts";
import type { Metrics } from "../ops/metrics.ts";
import type { FetchFn } from "./forward.ts";
import type { Upstream } from "./upstreams.ts";

/**
 * Active health of the upstreams: `GET <upstream><healthPath>` (server.py serves /health) on a
 * timer, never per readiness request. Kubelets probe /healthz every few seconds from every node;
 * answering from the cached result keeps the GPU box out of that traffic and keeps /healthz fast
 * even when the upstream hangs (a probe waits at most PROBE_TIMEOUT_MS).
 *
 * /healthz always reports the result. Readiness depends on it only with
 * TOKENPLACE_RELAY_REQUIRE_UPSTREAM_HEALTH=true: then at least one upstream must have passed its
 * latest probe, and that probe must be recent (a stuck prober must not keep a pod ready).
 */

export const PROBE_TIMEOUT_MS = 2_000;

export interface ProbeDeps {
  upstreams: readonly Upstream[];
  healthPath: string;
  intervalMs: number;
  required: boolean;
  fetch: FetchFn;
  clock: Clock;
  metrics: Metrics;
  logger: Logger;
}

interface ProbeResult {
  ok: boolean;
  at: number;
  status?: number;
  error?: string;
}

export function createUpstreamProbe(deps: ProbeDeps) {
  const results = new Map<Upstream, ProbeResult>();
  const staleMs = deps.intervalMs * 3;
  const timeoutMs = Math.min(PROBE_TIMEOUT_MS, deps.intervalMs);
  let inflight: Promise<void> | undefined;
  let timer: ReturnType<typeof setInterval> | undefined;

  async function probeOne(u: Upstream): Promise<void> {
    const url = new URL(`${u.url.origin}${u.url.pathname.replace(/\/+$/, "")}${deps.healthPath}`);
    let result: ProbeResult;
    try {
      const res = await deps.fetch(url, { signal: AbortSignal.timeout(timeoutMs), redirect: "manual", proxy: false } as BunFetchRequestInit);
      // Drain the body so the keep-alive socket goes back to the pool.
      await res.arrayBuffer().catch(() => undefined);
      result = { ok: res.status >= 200 && res.status < 300, at: deps.clock.now(), status: res.status };
    } catch (err) {
      result = { ok: false, at: deps.clock.now(), error: err instanceof Error ? err.message : String(err) };
    }
    const previous = results.get(u);
    results.set(u, result);
    deps.metrics.upstreamUp.labels(u.label).set(result.ok ? 1 : 0);
    if (previous?.ok !== result.ok) {
      const line = { upstream: u.label, status: result.status, err: result.error };
      if (result.ok) deps.logger.info(line, "upstream healthy");
      else deps.logger.warn(line, "upstream health probe failed");
    }
  }

  /** Probe every upstream now; concurrent callers share one round. */
  function probeNow(): Promise<void> {
    inflight ??= Promise.all(deps.upstreams.map(probeOne))
      .then(() => undefined)
      .finally(() => (inflight = undefined));
    return inflight;
  }

  function isFresh(r: ProbeResult | undefined, now: number): boolean {
    return r !== undefined && r.ok && now - r.at <= staleMs;
  }

  const readiness: ReadinessCheck = {
    name: "upstream",
    async check(): Promise<CheckResult> {
      // Only the very first readiness request waits, and only for the round already running.
      if (results.size === 0) await probeNow();
      const now = deps.clock.now();
      const healthy = deps.upstreams.some((u) => isFresh(results.get(u), now));
      const upstreams = deps.upstreams.map((u) => {
        const r = results.get(u);
        return { url: u.label, up: isFresh(r, now), checkedAgoMs: r ? now - r.at : null, ...(r?.status !== undefined ? { status: r.status } : {}) };
      });
      return { ok: healthy || !deps.required, detail: { upstreamHealthy: healthy, upstreamHealthRequired: deps.required, upstreams } };
    },
  };

  return {
    readiness,
    probeNow,
    start(): void {
      if (timer) return;
      probeNow().catch(() => {});
      timer = setInterval(() => void probeNow().catch(() => {}), deps.intervalMs);
      timer.unref();
    },
    close(): void {
      if (timer) clearInterval(timer);
      timer = undefined;
    },
  };
}

export type UpstreamProbe = ReturnType<typeof createUpstreamProbe>;
