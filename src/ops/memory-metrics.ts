import type { Registry } from "prom-client";
import { Counter, Gauge, Histogram } from "./prom.ts";
import type { MemoryBudget } from "../config/memory.ts";

const P = "tokenplace_relay_";

/** The guard's levels as the gauge reports them. */
export const GUARD_LEVELS = ["admitting", "shedding_clients", "shedding_all"] as const;
export type GuardLevel = 0 | 1 | 2;

/** The memory guard's series (src/ops/memory-guard.ts); labels are fixed enums only. */
export function createMemoryMetrics(registry: Registry, budget: Pick<MemoryBudget, "bytes" | "shares">, read: { rss(): number; level(): GuardLevel }) {
  const shares = new Gauge({
    name: P + "memory_budget_bytes",
    help: "RELAY_MEMORY_BUDGET_BYTES (share=total: the ceiling for the relay's RSS) and its shares (runtime, stored, bodies at their accounted cost, headroom).",
    labelNames: ["share"],
    registers: [registry],
  });
  shares.labels("total").set(budget.bytes);
  shares.labels("runtime").set(budget.shares.runtimeBytes);
  shares.labels("stored").set(budget.shares.storedBytes);
  shares.labels("bodies").set(budget.shares.bodyBytes);
  shares.labels("headroom").set(budget.shares.headroomBytes);
  new Gauge({
    name: P + "memory_rss_bytes",
    help: "The relay's resident memory, read at scrape time (the quantity RELAY_MEMORY_BUDGET_BYTES bounds).",
    registers: [registry],
    collect() {
      this.set(read.rss());
    },
  });
  new Gauge({
    name: P + "memory_guard_level",
    help: "The memory guard: 0 admitting, 1 refusing large client bodies (503 busy, reason memory), 2 refusing every large body.",
    registers: [registry],
    collect() {
      this.set(read.level());
    },
  });
  const refusals = new Counter({
    name: P + "memory_guard_refusals_total",
    help: "Request bodies the memory guard refused before reading them, by side (client routes, node routes).",
    labelNames: ["side"],
    registers: [registry],
  });
  for (const side of ["client", "node"]) refusals.labels(side).inc(0);
  const collections = new Histogram({
    name: P + "memory_forced_gc_seconds",
    help: "Pauses of the full collections the memory guard forced (RSS past its collect level).",
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
    registers: [registry],
  });
  const shrinks = new Counter({
    name: P + "memory_shrinks_total",
    help: "Heap shrinks the memory guard ran after load passed (open requests fell from a peak and stayed low) while RSS stayed past half the collect level.",
    registers: [registry],
  });
  return {
    shrunk: () => shrinks.inc(),
    refused: (side: "client" | "node") => refusals.labels(side).inc(),
    collected: (seconds: number) => collections.observe(seconds),
  };
}
