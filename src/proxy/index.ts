import type { Logger } from "pino";
import type { ProxyRoute } from "../app.ts";
import type { Config } from "../config/index.ts";
import type { Lifecycle } from "../ops/lifecycle.ts";
import type { Metrics } from "../ops/metrics.ts";
import type { ReadinessCheck } from "../ops/health.ts";

export interface ProxyDeps {
  config: Config;
  metrics: Metrics;
  logger: Logger;
  lifecycle: Lifecycle;
}

/**
 * Proxy mode (issue #3) is not built yet: no path is claimed, so /api/ and /v1/ requests get the
 * relay's JSON 404 rather than a half-working forward.
 */
export function createProxyRoute(_deps: ProxyDeps): ProxyRoute & { readiness?: ReadinessCheck; close?(): void } {
  return {
    matches: () => false,
    handle: async () => {
      throw new Error("proxy mode is not available");
    },
  };
}
