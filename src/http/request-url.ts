import { badRequest } from "../errors.ts";

/** The origin put in place of whatever authority Bun read from the Host header; never contacted. */
const ORIGIN = "http://relay.invalid";

/**
 * The request's path and query as a URL, whatever the Host header was. Bun builds `req.url` from
 * Host: normally absolute; relative (`/path?q`) when there is none (HTTP/1.0) or it holds `/`, `@`,
 * a space or non-ASCII; absolute but unparseable when it is `[::1`, `relay:99999` or `:80`. Only
 * the path and query are the client's request target, so the authority is dropped: every request
 * reaches the route its path names (`new URL(req.url)` throws for the last two kinds, and the relay
 * used to route those requests to `/`). Throws for a target without a path (authority-form).
 */
export function requestUrl(raw: string): URL {
  let target = raw;
  if (!raw.startsWith("/")) {
    const scheme = raw.indexOf("://");
    // Bun hands an authority-form target (`CONNECT relay:443`) over as it is: it names no path.
    if (scheme < 0) throw new TypeError("The request target is neither a path nor an absolute URL");
    const slash = raw.indexOf("/", scheme + 3);
    target = slash < 0 ? "/" : raw.slice(slash);
  }
  // Concatenated, not new URL(target, base): a path starting with "//" must stay a path.
  return new URL(ORIGIN + target);
}

/**
 * Characters a path may consist of for its own text to be its pathname: URL parsing changes
 * nothing in such a path (no percent-encoding to apply, no dot segment, no backslash).
 */
const PLAIN_PATH = /^\/[A-Za-z0-9_\-/]*$/;

/**
 * A request target whose path is not its own normal form: URL parsing would resolve dot segments
 * (`..`, `%2e%2e`, `.%2E`), turn `\` into `/` or percent-encode characters. Routing the normalised
 * path let `/api/..\metrics` or `/v1/.%2E/metrics` reach /metrics through an Ingress that only
 * forwards `/api/` and `/v1/` (Go's path.Clean, like most proxies, leaves `\` and `%2e` alone), so
 * such a target is refused for every route, proxied ones included. RFC 3986 §6.2.2 makes these
 * forms equivalent, and no peer sends them: token.place's server.py, client.py and the browser page
 * build every path from fixed, plain strings.
 */
export const invalidPath = () =>
  badRequest("invalid_path", "Request path is not in normal form (dot segments, backslashes or characters that need percent-encoding)");

/**
 * `requestUrl(raw).pathname` without building a URL for the usual request target, a plain path
 * like `/api/v1/relay/requests` (the router looks up every request by it); anything else goes
 * through requestUrl and is refused (invalidPath) when that would change it. Throws a TypeError
 * for a target without a path, as requestUrl does.
 */
export function requestPath(raw: string): string {
  let start = 0;
  if (!raw.startsWith("/")) {
    const scheme = raw.indexOf("://");
    start = scheme < 0 ? -1 : raw.indexOf("/", scheme + 3);
  }
  if (start < 0) return requestUrl(raw).pathname; // throws: no path
  const query = raw.indexOf("?", start);
  const hash = raw.indexOf("#", start);
  const end = query < 0 ? (hash < 0 ? raw.length : hash) : hash < 0 ? query : Math.min(query, hash);
  const path = raw.slice(start, end);
  if (PLAIN_PATH.test(path)) return path;
  const pathname = requestUrl(raw).pathname;
  if (pathname !== path) throw invalidPath();
  return pathname;
}
