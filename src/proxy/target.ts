import { badRequest } from "../errors.ts";

/**
 * Which requests are proxied, and where to. The request never chooses the host: the target is
 * always one of the configured upstream origins plus the request's own path and query.
 *
 * What Bun hands us (checked on Bun 1.4.5 over raw sockets, see test/proxy/paths.test.ts):
 * - absolute-form request-targets (`GET http://evil/api/x HTTP/1.1`, RFC 9112 §3.2.2) lose their
 *   authority: `req.url` is rebuilt from the Host header, so only the path survives;
 * - `req.url` takes the Host header as its authority, so its origin is attacker-controlled;
 * - `..`, `.`, `%2e%2e` and `\` segments are already resolved (WHATWG URL parsing);
 * - `%2f`, `%5c` and `%00` stay encoded, and a Host containing `/` or `@` yields a relative url.
 * Encoded separators are refused here because many upstreams (werkzeug among them) decode them
 * and could resolve `..%2f` outside the prefix after the relay has checked it.
 */

export interface Target {
  /** The configured prefix that matched, e.g. "/api/". */
  prefix: string;
  /** Normalised path, starting with the prefix. */
  path: string;
  /** The query exactly as received, including "?" (or ""); the fragment is never sent. */
  search: string;
}

/** Parses req.url whether Bun made it absolute (normal) or left it relative (odd Host header). */
function parseRequestUrl(raw: string): URL {
  try {
    // Only the path and query are used; the base is never contacted.
    return new URL(raw, "http://relay.invalid");
  } catch {
    throw badRequest("bad_path", "Request target is not a valid URL");
  }
}

/**
 * Characters a path (and a query) may consist of for URL parsing to leave its text unchanged: no
 * dot segment to resolve, no backslash, nothing to percent-encode (WHATWG URL: the path and
 * special-query percent-encode sets). Such a target, the usual one, is sliced out of req.url
 * instead of parsed into a URL object per request; anything else takes the URL parser, as before.
 */
const PLAIN_PATH = /^\/[A-Za-z0-9_\-/]*$/;
const PLAIN_QUERY = /^[A-Za-z0-9_\-.~!$&()*+,;=:@/?%]*$/;

/**
 * An authority URL parsing would accept unchanged: a host name or IPv4 address, or a bracketed IPv6
 * address, and an optional port (checked against 65535 below). Anything else (percent-escapes,
 * control characters, a bad port) takes the URL parser, which refuses it 400 bad_path: a malformed
 * Host must not reach the upstream as X-Forwarded-Host.
 */
const PLAIN_AUTHORITY = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?$/;

/** Path and query of req.url when parsing would not change them (see PLAIN_PATH), else undefined. */
export function plainTarget(raw: string): { path: string; search: string } | undefined {
  let start = 0;
  if (!raw.startsWith("/")) {
    const scheme = raw.indexOf("://");
    start = scheme < 0 ? -1 : raw.indexOf("/", scheme + 3);
    if (start < 0) return undefined;
    const authority = PLAIN_AUTHORITY.exec(raw.slice(scheme + 3, start));
    if (!authority || (authority[1] !== undefined && Number(authority[1]) > 65_535)) return undefined;
  }
  const hash = raw.indexOf("#", start);
  const end = hash < 0 ? raw.length : hash;
  const q = raw.indexOf("?", start);
  const pathEnd = q < 0 || q > end ? end : q;
  const path = raw.slice(start, pathEnd);
  if (!PLAIN_PATH.test(path)) return undefined;
  // URL.search is "" for an empty query ("?" alone), as for none.
  if (end - pathEnd <= 1) return { path, search: "" };
  const search = raw.slice(pathEnd, end);
  return PLAIN_QUERY.test(search.slice(1)) ? { path, search } : undefined;
}

/** Control characters, and separators that an upstream would decode into path structure. */
const FORBIDDEN_DECODED = /[\u0000-\u001f\u007f/\\]/;

function checkSegments(path: string): void {
  // Without a "%" nothing is left to decode: URL parsing already resolved dot segments and
  // backslashes and percent-encoded every control character (WHATWG URL, path percent-encode set).
  if (!path.includes("%")) return;
  for (const segment of path.split("/")) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(segment);
    } catch {
      throw badRequest("bad_path", "Malformed percent-encoding in path");
    }
    if (decoded === "." || decoded === ".." || FORBIDDEN_DECODED.test(decoded)) {
      throw badRequest("bad_path", "Path contains an encoded separator, dot segment or control character");
    }
  }
}

export function createTargetMatcher(prefixes: readonly string[]) {
  // Longest prefix first, so "/api/v2/" wins over "/api/" when both are configured.
  const ordered = [...prefixes].sort((a, b) => b.length - a.length);

  function matchPrefix(pathname: string): string | undefined {
    return ordered.find((p) => pathname.startsWith(p));
  }

  /** The target for a request, or a 400 when its path is unsafe or left every prefix. */
  function resolve(rawUrl: string): Target {
    const plain = plainTarget(rawUrl);
    let path: string;
    let search: string;
    if (plain !== undefined) {
      path = plain.path;
      search = plain.search;
    } else {
      const url = parseRequestUrl(rawUrl);
      path = url.pathname;
      search = url.search;
    }
    const prefix = matchPrefix(path);
    // Normally unreachable (the app routes by the same pathname); guards direct callers.
    if (prefix === undefined) throw badRequest("bad_path", "Path is outside the proxied prefixes");
    checkSegments(path);
    return { prefix, path, search };
  }

  return { matchPrefix, resolve };
}

export type TargetMatcher = ReturnType<typeof createTargetMatcher>;

/** The text a target is appended to: the upstream's origin and base path, without a trailing slash. */
export function upstreamRoot(base: URL): string {
  return `${base.origin}${base.pathname.replace(/\/+$/, "")}`;
}

/**
 * Joins an upstream root (upstreamRoot) with the target, as the string fetch parses. String
 * assembly, not `new URL(path, base)`: a path like "//evil/x" would otherwise be read as a
 * network-path reference and replace the host (RFC 3986 §4.2). Appended to an origin, a path
 * that starts with "/" ends the authority there (RFC 3986 §3.2), so the host stays the
 * configured one; every target path starts with its prefix, "/" included, and this is checked
 * rather than assumed. No URL object per request: fetch parses the string once itself.
 */
export function buildUpstreamUrl(root: string, target: Target): string {
  if (!target.path.startsWith("/")) throw badRequest("bad_path", "Path would change the upstream origin");
  return root + target.path + target.search;
}
