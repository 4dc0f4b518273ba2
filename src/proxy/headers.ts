import { SERVER_TOKEN_HEADER } from "../common/tokens.ts";
import { REQUEST_ID_HEADER } from "../http/request-id.ts";

/**
 * Header rules for the proxy. Bun's fetch and server forward whatever they are given (no
 * hop-by-hop stripping), so both directions are built explicitly here.
 */

/**
 * Connection-specific fields a proxy must not forward (RFC 9110 §7.6.1): Connection itself,
 * Proxy-Connection, Keep-Alive, TE, Transfer-Encoding and Upgrade, plus every field the
 * Connection header names. Proxy-Authorization and Proxy-Authenticate are addressed to the
 * proxy, not the origin (RFC 9110 §11.7.1, §11.7.2). Trailer announces trailers Bun does not
 * forward. Host is re-derived by fetch from the upstream URL (RFC 9110 §7.2); the client's
 * value travels as X-Forwarded-Host. Upgrade is dropped: the relay does not tunnel WebSockets.
 */
const HOP_BY_HOP = new Set([
  "connection",
  "proxy-connection",
  "keep-alive",
  "te",
  "transfer-encoding",
  "upgrade",
  "trailer",
  "proxy-authorization",
  "proxy-authenticate",
]);

/** Relay credentials (the node registration token) and the X-Relay-* namespace stay here. */
const SERVER_TOKEN_FIELD = SERVER_TOKEN_HEADER.toLowerCase();
const RELAY_ONLY = (name: string) => name === SERVER_TOKEN_FIELD || name.startsWith("x-relay-");

/**
 * Forwarding fields the relay writes itself, and the other names proxies use for the same facts
 * (the client's address, the original URL or prefix) that upstream frameworks may believe:
 * inbound copies are only kept from a trusted ingress, never from the client itself.
 */
const FORWARDING = new Set([
  "forwarded",
  "x-forwarded-for",
  "x-forwarded-proto",
  "x-forwarded-host",
  "x-forwarded-port",
  "x-forwarded-prefix",
  "x-forwarded-server",
  "x-real-ip",
  "x-original-url",
  "x-rewrite-url",
]);

const VIA = "1.1 tokenplace-relay";

const NO_TOKENS: ReadonlySet<string> = new Set();

/** Names listed in Connection (RFC 9110 §7.6.1): "Connection: close, X-Foo" drops X-Foo too. */
function connectionTokens(headers: Headers): ReadonlySet<string> {
  const value = headers.get("connection");
  // Most messages have none (HTTP/1.1 keeps connections alive without saying so): no set to build.
  if (value === null) return NO_TOKENS;
  const names = new Set<string>();
  for (const token of value.split(",")) {
    const t = token.trim().toLowerCase();
    if (t !== "") names.add(t);
  }
  return names;
}

const REQUEST_ID_FIELD = REQUEST_ID_HEADER.toLowerCase();
/** Inbound fields the relay replaces with its own: Host (fetch derives it from the URL), the request id, relay-only fields. */
const replaced = (name: string) => RELAY_ONLY(name) || name === "host" || name === REQUEST_ID_FIELD;
// Two fixed predicates instead of a closure over the request's settings per request.
const droppedWhenTrusted = replaced;
const droppedWhenUntrusted = (name: string) => replaced(name) || FORWARDING.has(name);

export interface ForwardInfo {
  /** Socket peer of the client connection. */
  clientIp: string | undefined;
  /** Scheme the client used to reach the relay ("http" unless TLS terminates here). */
  proto: string;
  /** Host header the client sent. */
  host: string | null;
  requestId: string;
  /** Keep inbound X-Forwarded-* / Forwarded (the relay sits behind a trusted ingress). */
  trustForwarded: boolean;
}

/** One header field as fetch takes it in a HeadersInit list. */
export type HeaderField = [name: string, value: string];

/**
 * Headers sent to the upstream: end-to-end fields only, plus forwarding facts. A list of fields
 * for fetch, not a Headers object: the inbound fields are looked at once, in JavaScript, and
 * fetch builds its own header set from the list natively; a Headers object cost a native call
 * per copy, delete, lookup and set on every new stream before its fetch could start.
 */
export function upstreamRequestHeaders(inbound: Headers, info: ForwardInfo): HeaderField[] {
  const named = connectionTokens(inbound);
  const dropped = info.trustForwarded ? droppedWhenTrusted : droppedWhenUntrusted;
  const out: HeaderField[] = [];
  // The forwarding fields a trusted ingress set (untrusted ones are dropped above) are extended
  // or kept below; Headers iteration already joins repeated fields with ", " (Set-Cookie aside).
  let chain: string | undefined;
  let proto: string | undefined;
  let host: string | undefined;
  let via: string | undefined;
  inbound.forEach((value, name) => {
    if (HOP_BY_HOP.has(name) || named.has(name) || dropped(name)) return;
    if (name === "x-forwarded-for") chain = value;
    else if (name === "x-forwarded-proto") proto = value;
    else if (name === "x-forwarded-host") host = value;
    else if (name === "via") via = value;
    else out.push([name, value]);
  });
  // X-Forwarded-For: the chain so far (when trusted) plus the peer this relay saw.
  const forwardedFor = info.clientIp ? (chain ? `${chain}, ${info.clientIp}` : info.clientIp) : chain;
  if (forwardedFor !== undefined) out.push(["x-forwarded-for", forwardedFor]);
  // Behind a trusted ingress the first hop's proto/host are the ones the user saw; keep them.
  out.push(["x-forwarded-proto", proto ?? info.proto]);
  const forwardedHost = host ?? info.host;
  if (forwardedHost) out.push(["x-forwarded-host", forwardedHost]);
  out.push([REQUEST_ID_FIELD, info.requestId]);
  // A proxy appends itself to Via (RFC 9110 §7.6.3).
  out.push(["via", via ? `${via}, ${VIA}` : VIA]);
  return out;
}

/**
 * Headers sent back to the client, as a list of fields the Response is built from (natively, as
 * for the request direction). Content-Encoding and Content-Length pass through untouched:
 * the body is forwarded as the upstream encoded it (fetch runs with decompress: false), so both
 * still describe the bytes. Transfer-Encoding is dropped; Bun frames the response itself.
 */
export function clientResponseHeaders(upstream: Headers): HeaderField[] {
  const named = connectionTokens(upstream);
  const out: HeaderField[] = [];
  let via: string | undefined;
  // Iteration yields each Set-Cookie as its own field, so they stay separate (RFC 6265 §3).
  upstream.forEach((value, name) => {
    if (HOP_BY_HOP.has(name) || named.has(name) || RELAY_ONLY(name)) return;
    if (name === "via") via = value;
    else out.push([name, value]);
  });
  out.push(["via", via ? `${via}, ${VIA}` : VIA]);
  return out;
}

export const __test = { HOP_BY_HOP, connectionTokens };
