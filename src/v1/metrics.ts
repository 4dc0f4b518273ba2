import type { Registry } from "prom-client";
import { counterChildren } from "../ops/metrics.ts";
import { Counter, Gauge } from "../ops/prom.ts";
import type { ControlState, EvictionReason, Outcome, V1Events, V1Stats } from "./store.ts";

/**
 * API v1 series under upstream relay.py's names and labels (spec §6.11), so its dashboards and
 * alerts work unchanged. Labels are fixed enums only: never a key, request id or credential.
 */
const OUTCOMES = ["completed", "cancelled", "expired", "timed_out", "rate_limited", "dependency_failure", "failed"] as const;
const EVICTION_REASONS: readonly EvictionReason[] = ["stale_lease", "unregistered", "capacity_loss"];
const CONTROL_STATES: readonly ControlState[] = ["active", "cancelled", "expired", "acknowledged", "completed_unavailable"];
/** Upstream labels queue gauges by provider mode; this relay is always "relay". */
const PROVIDER_MODE = "relay";

export function createV1Metrics(registry: Registry, readStats: () => Promise<V1Stats>) {
  // The gauges below read one stats snapshot per scrape.
  let snapshot: { at: number; stats: Promise<V1Stats> } | undefined;
  const stats = () => {
    const now = performance.now();
    if (!snapshot || now - snapshot.at > 100) snapshot = { at: now, stats: readStats() };
    return snapshot.stats;
  };
  const gauge = (name: string, help: string, pick: (s: V1Stats) => number, labels?: Record<string, string>) =>
    new Gauge({
      name,
      help,
      labelNames: labels ? Object.keys(labels) : [],
      registers: [registry],
      async collect() {
        const v = pick(await stats());
        if (labels) this.labels(labels).set(v);
        else this.set(v);
      },
    });

  gauge("tokenplace_relay_queue_depth", "Current encrypted relay request queue depth.", (s) => s.queued, { provider_mode: PROVIDER_MODE });
  gauge("tokenplace_relay_oldest_queued_request_age_seconds", "Age of the oldest queued encrypted relay request.", (s) => s.oldestQueuedAgeSeconds, {
    provider_mode: PROVIDER_MODE,
  });
  gauge("tokenplace_compute_nodes_registered", "Registered API v1 compute nodes.", (s) => s.nodes);
  gauge("tokenplace_compute_nodes_healthy", "Healthy API v1 compute nodes using relay lease semantics.", (s) => s.healthyNodes);
  gauge("tokenplace_compute_node_lease_age_seconds", "Oldest compute-node lease age without node identity.", (s) => s.oldestLeaseAgeSeconds);
  gauge("tokenplace_relay_in_flight_requests", "Current encrypted relay requests dispatched to compute nodes.", (s) => s.inFlight);
  gauge("tokenplace_relay_oldest_in_flight_age_seconds", "Age of the oldest in-flight encrypted relay request.", (s) => s.oldestInFlightAgeSeconds);
  gauge("tokenplace_relay_v1_stored_bytes", "Ciphertext bytes the API v1 state holds (bounded by RELAY_V1_MAX_STORED_BYTES).", (s) => s.storedBytes);
  gauge("tokenplace_relay_v1_stored_answers", "Encrypted answers waiting for their client (they expire after RELAY_ANSWER_TTL_MS).", (s) => s.answers);

  const evictions = new Counter({ name: "tokenplace_compute_node_evictions_total", help: "Compute node evictions by fixed reason.", labelNames: ["reason"], registers: [registry] });
  const outcomes = new Counter({ name: "tokenplace_relay_request_outcomes_total", help: "Terminal relay request outcomes by fixed enum.", labelNames: ["outcome"], registers: [registry] });
  const control = new Counter({
    name: "tokenplace_relay_compute_control_requests_total",
    help: "Privacy-safe API v1 compute-control polls by bounded state.",
    labelNames: ["state"],
    registers: [registry],
  });
  const renewals = new Counter({ name: "tokenplace_relay_compute_control_lease_renewals_total", help: "Privacy-safe API v1 compute-control lease renewals.", registers: [registry] });
  const dropped = new Counter({
    name: "tokenplace_relay_v1_expired_total",
    help: "API v1 items dropped by expiry, by kind (answer: uncollected; untracked_request: queued without request_id).",
    labelNames: ["kind"],
    registers: [registry],
  });
  // Every label value exists from the start, so rate() and absent() work before the first event.
  for (const o of OUTCOMES) outcomes.labels(o).inc(0);
  for (const r of EVICTION_REASONS) evictions.labels(r).inc(0);
  for (const s of CONTROL_STATES) control.labels(s).inc(0);
  for (const k of ["answer", "untracked_request"]) dropped.labels(k).inc(0);

  // One outcome is counted per completed request: added to its label set directly (counterChildren),
  // not through prom-client's labels(), which validates, hashes and binds on every call.
  const countOutcome: (o: Outcome | (typeof OUTCOMES)[number]) => void = counterChildren(outcomes, ["outcome"]);
  const events: V1Events = {
    evicted: (reason) => evictions.labels(reason).inc(),
    outcome: countOutcome,
    dropped: (kind, n) => dropped.labels(kind).inc(n),
  };
  return {
    events,
    control: (state: ControlState) => control.labels(state).inc(),
    leaseRenewed: () => renewals.inc(),
    /** A POST /api/v1/relay/requests refused by a rate limit (upstream's terminal outcome "rate_limited"). */
    rateLimited: () => countOutcome("rate_limited"),
  };
}

export type V1Metrics = ReturnType<typeof createV1Metrics>;
