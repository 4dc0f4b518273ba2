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
