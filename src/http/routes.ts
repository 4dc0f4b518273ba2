import { RelayError, withConnectionClose } from "../errors.ts";
import { CLOSE } from "./body-budget.ts";
import type { Handler } from "./router.ts";

/**
 * One route a feature serves, declared as data (Hono's mergeable route lists): the router, the
 * reserved-path list, the quiet (probe) routes, CORS, the legacy switch and the README check all
 * derive from these declarations, so they cannot drift apart.
 */
export interface RouteSpec {
  method: "GET" | "POST";
  path: string;
  /**
   * Checked before the handler runs. "server-token": X-Relay-Server-Token (spec §3.1).
   * "metrics-token": a private operator read, `Authorization: Bearer` TOKENPLACE_METRICS_TOKEN
   * when one is set (spec §6.11). "metrics-scrape": the same, and 401 for everyone while
   * TOKENPLACE_METRICS_DISABLED. Both metrics kinds: src/ops/operator-auth.ts.
   */
  auth?: "server-token" | "metrics-token" | "metrics-scrape";
  /** Browser-callable client route: CORS headers and an OPTIONS preflight (spec §2). */
  cors?: boolean;
  /** Probe or scrape traffic: logged at debug. */
  quiet?: boolean;
  /** Cache-Control of every answer (spec §2: no-store on operator routes). */
  cache?: "no-store";
  /**
   * Largest body the route reads, below RELAY_MAX_BODY_BYTES: a larger declared Content-Length is
   * refused before anything else, auth included (spec §6.9 for progress), before a byte is read;
   * a chunked body is cut there while streaming (src/http/json.ts). Answer: `tooLarge`, else 413
   * route_body_too_large naming the limit; both with `Connection: close`.
   */
  maxBodyBytes?: number;
  /** The route's own 413 body (spec §6.9: progress_too_large); default routeBodyTooLarge. */
  tooLarge?: () => RelayError;
  /** A legacy-protocol route: off unless TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES (spec §12). */
  legacy?: boolean;
  /**
   * Rate limit, charged before the token check (spec §11): "public" = API_RATE_LIMIT and
   * API_DAILY_QUOTA per client address; "control" = the compute-node quota per client address
   * (the handler charges the per-node-identity bucket once it has read the body). Undeclared
   * routes are exempt, as upstream's probes, metadata, servers/next and responses/retrieve are.
   */
  limit?: "public" | "control";
}

export type RouteTable = Readonly<Record<string, RouteSpec>>;

/** A table plus the handlers a feature factory built for it, by the same names. */
export interface Mount<T extends RouteTable = RouteTable> {
  table: T;
  handlers: { [K in keyof T]: Handler };
}

export const mount = <T extends RouteTable>(table: T, handlers: { [K in keyof T]: Handler }): Mount<T> => ({ table, handlers });

/**
 * 413 of a body over its route's maxBodyBytes, in the protocols' nested error shape with the
 * limit named. Closes the connection: the body is left unread (RFC 9110 §15.5.14).
 */
export const routeBodyTooLarge = (limit: number) => {
  const message = `Request body exceeds this route's limit of ${limit} bytes`;
  return new RelayError(413, "route_body_too_large", message, { error: { message, code: 413, type: "route_body_too_large", limit } }, CLOSE);
};

/** The refusal of a body over `spec`'s maxBodyBytes: the route's own, with `Connection: close`. */
export function bodyTooLargeFor(spec: Pick<RouteSpec, "maxBodyBytes" | "tooLarge">): RelayError {
  if (!spec.tooLarge) return routeBodyTooLarge(spec.maxBodyBytes ?? 0);
  return withConnectionClose(spec.tooLarge());
}
