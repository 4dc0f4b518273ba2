import { brokerRoutes } from "./broker/handlers.ts";
import type { RouteSpec, RouteTable } from "./http/routes.ts";
import { opsRoutes } from "./ops/health.ts";
import { V1_RESERVED_PREFIX, v1RouteTables } from "./v1/index.ts";

/**
 * Every route the relay serves itself, from the features' declarative tables. The app mounts
 * exactly these, the README's route table is checked against them, and they win over the proxy.
 */
export const ROUTE_TABLES: readonly RouteTable[] = [opsRoutes, ...v1RouteTables, brokerRoutes];

export const RELAY_ROUTE_SPECS: readonly RouteSpec[] = ROUTE_TABLES.flatMap((t) => Object.values(t));

export const RELAY_ROUTES: readonly string[] = [...new Set(RELAY_ROUTE_SPECS.map((r) => r.path))];

/** Path prefixes that belong to the relay as a whole: nothing under them is ever proxied. */
export const RESERVED_PREFIXES: readonly string[] = [V1_RESERVED_PREFIX, "/api/v1/meta/", "/api/v1/version/"];

/** Whether a path is the relay's own (a route, or under a reserved prefix). */
export const isReservedPath = (pathname: string) => RELAY_ROUTES.includes(pathname) || RESERVED_PREFIXES.some((p) => pathname.startsWith(p));
