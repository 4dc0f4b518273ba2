import { mount, type Mount } from "../http/routes.ts";
import type { V1Deps } from "./deps.ts";
import { createNodeHandlers, nodeRoutes } from "./nodes.ts";
import { createOperatorHandlers, operatorRoutes } from "./operator.ts";
import { createRequestHandlers, requestRoutes } from "./requests.ts";
import { createResponseHandlers, responseRoutes } from "./responses.ts";

/** The API v1 E2EE relay protocol (token.place API v1 relay spec): its routes, by role. */
export const v1RouteTables = [nodeRoutes, requestRoutes, responseRoutes, operatorRoutes] as const;

/** Everything under this prefix is the relay's own: an unknown path there is a 404, never proxied. */
export const V1_RESERVED_PREFIX = "/api/v1/relay/";

export function createV1Mounts(deps: V1Deps & { relayFacts: Record<string, unknown> }): Mount[] {
  return [
    mount(nodeRoutes, createNodeHandlers(deps)),
    mount(requestRoutes, createRequestHandlers(deps)),
    mount(responseRoutes, createResponseHandlers(deps)),
    mount(operatorRoutes, createOperatorHandlers(deps)),
  ];
}

export type { V1Deps };
export { MemoryV1Store } from "./memory/index.ts";
export { RedisV1Store, type RedisV1StoreOptions } from "./redis/index.ts";
export { createV1Metrics } from "./metrics.ts";
