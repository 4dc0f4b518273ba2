import type * as PromClient from "prom-client";

/**
 * prom-client's classes, each loaded from its own module. The package entry also loads its
 * Pushgateway, and with it node:http, node:https and node:zlib, which the relay never uses: that
 * was the largest single share of the binary's start-up (measured in the compiled binary: ~16 ms
 * for the entry against ~4 ms for these modules). The relay imports prom-client's values from
 * here and its types from the package; both name the same module instances.
 */
export const Registry = require("prom-client/lib/registry") as typeof PromClient.Registry;
export type Registry = PromClient.Registry;
export const Counter = require("prom-client/lib/counter") as typeof PromClient.Counter;
export type Counter<T extends string = string> = PromClient.Counter<T>;
export const Gauge = require("prom-client/lib/gauge") as typeof PromClient.Gauge;
export type Gauge<T extends string = string> = PromClient.Gauge<T>;
export const Histogram = require("prom-client/lib/histogram") as typeof PromClient.Histogram;
export type Histogram<T extends string = string> = PromClient.Histogram<T>;
type DefaultMetric = (registry: PromClient.Registry, config: { eventLoopMonitoringPrecision: number }) => void;

/**
 * The process metrics that are true under Bun (see UNTRUE_UNDER_BUN in src/ops/metrics.ts), each
 * from its own module, in collectDefaultMetrics' order. Its entry loads every default metric and
 * with them `node:v8` (heap spaces), a PerformanceObserver (GC) and the handle/request/resource
 * helpers, whose series the relay removes again: measured in the compiled binary, those
 * held ~0.6 MiB of RSS idle. Loaded when first asked for (src/ops/metrics.ts defers the process
 * metrics past start-up).
 */
/**
 * The event-loop lag histogram's timer period (perf_hooks.monitorEventLoopDelay's resolution).
 * collectDefaultMetrics' default of 10 ms is a timer firing 100 times a second for as long as the
 * relay runs: measured on the idle compiled relay, it was most of its wake-ups and ~4 ms of CPU a
 * second. A stall of the loop longer than this is always caught (the timer falls due inside it and
 * fires late by the stall); shorter stalls are caught with a probability of their length over it.
 */
export const EVENT_LOOP_LAG_RESOLUTION_MS = 100;

export const loadCollectDefaultMetrics = () => {
  const metrics: DefaultMetric[] = [
    require("prom-client/lib/metrics/processCpuTotal"),
    require("prom-client/lib/metrics/processStartTime"),
    require("prom-client/lib/metrics/osMemoryHeap"),
    require("prom-client/lib/metrics/processOpenFileDescriptors"),
    require("prom-client/lib/metrics/processMaxFileDescriptors"),
    require("prom-client/lib/metrics/eventLoopLag"),
    require("prom-client/lib/metrics/heapSizeAndUsed"),
  ];
  return (config: { register: PromClient.Registry }) => {
    for (const metric of metrics) metric(config.register, { eventLoopMonitoringPrecision: EVENT_LOOP_LAG_RESOLUTION_MS, ...config });
  };
};
