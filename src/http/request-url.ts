/** The origin put in place of whatever authority Bun read from the Host header; never contacted. */
const ORIGIN = "http://relay.invalid";

/**
 * The request's path and query as a URL, whatever the Host header was. Bun builds `req.url` from
 * Host: normally absolute; relative (`/path?q`) when there is none (HTTP/1.0) or it holds `/`, `@`,
 * a space or non-ASCII; absolute but unparseable when it is `[::1`, `relay:99999` or `:80`. Only
 * the path and query are the client's request target, so the authority is dropped: every request
 * reaches the route its path names (`new URL(req.url)` throws for the last two kinds, and the relay
 * used to route those requests to `/`).
 */
export function requestUrl(raw: string): URL {
  let target = raw;
  if (!raw.startsWith("/")) {
    const scheme = raw.indexOf("://");
    const slash = scheme < 0 ? -1 : raw.indexOf("/", scheme + 3);
    target = slash < 0 ? "/" : raw.slice(slash);
  }
  // Concatenated, not new URL(target, base): a path starting with "//" must stay a path.
  return new URL(ORIGIN + target);
}
