import { brokerRoutes } from "./broker/handlers.ts";
import type { RouteSpec, RouteTable } from "./http/routes.ts";
import { opsRoutes } from "./ops/health.ts";
import { V1_RESERVED_PREFIX, v1RouteTables } from "./v1/index.ts";
import { webRoutes } from "./web/index.ts";

/**
 * Every route the relay serves itself, from the features' declarative tables. The app mounts
 * exactly these, the README's route table is checked against them, and they win over the proxy.
 */
export const ROUTE_TABLES: readonly RouteTable[] = [opsRoutes, ...v1RouteTables, brokerRoutes, webRoutes];

export const RELAY_ROUTE_SPECS: readonly RouteSpec[] = ROUTE_TABLES.flatMap((t) => Object.values(t));

export const RELAY_ROUTES: readonly string[] = [...new Set(RELAY_ROUTE_SPECS.map((r) => r.path))];

/** Path prefixes that belong to the relay as a whole: nothing under them is ever proxied. */
export const RESERVED_PREFIXES: readonly string[] = [V1_RESERVED_PREFIX, "/api/v1/meta/", "/api/v1/version/"];

/**
 * Whether a path is the relay's own (a route, or under a reserved prefix), also in disguise: the
 * upstream (Werkzeug) percent-decodes, ignores case in no part of the path but its own routing may,
 * and merges or tolerates `//` and `;params`, so `/api/v1/%72elay/...`, `/api/v1//relay/...`,
 * `/api/v1/relay;x/...` and `/API/V1/RELAY/...` are the relay's too and are never forwarded.
 */
export function isReservedPath(pathname: string): boolean {
  const candidates = [pathname, normalise(pathname)];
  return candidates.some((p) => RELAY_ROUTES.includes(p) || RESERVED_PREFIXES.some((r) => p.startsWith(r) || p === r.slice(0, -1)));
}

function normalise(pathname: string): string {
  let p = pathname;
  try {
    p = decodeURIComponent(p);
  } catch {
    // Malformed escapes: compare the raw form.
  }
  return p
    .replace(/;[^/]*/g, "")
    .replace(/\/{2,}/g, "/")
    .toLowerCase();
}
