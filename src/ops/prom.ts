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
/** Loaded when first asked for (src/ops/metrics.ts defers the process metrics past start-up). */
export const loadCollectDefaultMetrics = () => require("prom-client/lib/defaultMetrics") as typeof PromClient.collectDefaultMetrics;
