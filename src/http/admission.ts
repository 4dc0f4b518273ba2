import { Gauge } from "../ops/prom.ts";
import type { BoundsConfig } from "../config/bounds.ts";
import { NODE_CONNECTION_HEADROOM_SHARE } from "../config/defaults.ts";
import { RelayError } from "../errors.ts";
import type { Metrics } from "../ops/metrics.ts";
import { BodyBudget, CLOSE, attachBodyPolicy, busy } from "./body-budget.ts";
import { bodyTooLargeFor, type RouteSpec } from "./routes.ts";

/** What admission needs of the matched route. */
export type BodyRoute = Pick<RouteSpec, "maxBodyBytes" | "tooLarge">;

/**
 * Most header fields a request may carry; beyond: 431. Bun itself answers an empty 431 from about
 * 200 fields (1.4.5), so this gives the JSON answer in between. Real peers send about 10.
 */
export const MAX_HEADER_FIELDS = 100;

const refuse = (status: number, code: string, message: string, extra: Record<string, unknown> = {}, headers: Record<string, string> = CLOSE) =>
  new RelayError(status, code, message, { error: { message, code: status, type: code, ...extra } }, headers);

export const admissionErrors = {
  uriTooLong: (max: number) => refuse(414, "uri_too_long", `Request target is longer than ${max} bytes`, { limit: max }),
  headersTooLarge: (max: number) => refuse(431, "headers_too_large", `Request header fields exceed ${max} bytes`, { limit: max }),
  tooManyHeaders: (max: number) => refuse(431, "too_many_headers", `Request has more than ${max} header fields`, { limit: max }),
  connectionsFull: () => busy("connections", "The relay is serving as many requests as it may; retry shortly"),
  invalidContentLength: () => refuse(400, "invalid_content_length", "Content-Length must be one decimal number of bytes"),
  invalidHost: () => refuse(400, "invalid_host", "Host must be one host name or IP address, with an optional port"),
};

/**
 * A Content-Length the relay accepts: one decimal number (RFC 9110 §8.6), at most 15 digits (any
 * real body is refused long before by its limit). Bun joins repeated header lines with ", " and
 * passes "N, N" on; Number() of that is NaN, which compares false with every limit, so a request
 * repeating its Content-Length was read past the route's limit, RELAY_MAX_BODY_BYTES and the body
 * budget. RFC 9112 §6.3 makes any other value invalid framing: 400, and the connection closed.
 */
const CONTENT_LENGTH = /^\d{1,15}$/;

/**
 * A Host the relay accepts: one host name (letters, digits, `-`, `.`, and `_` as container and
 * service names have), an IPv4 address or a bracketed IPv6 address, and an optional port. RFC 9112
 * §3.2 asks for 400 on an invalid Host or more than one (Bun joins repeated lines with ", ");
 * userinfo (`evil@host`), paths and spaces would otherwise travel on as X-Forwarded-Host, and Bun
 * leaves req.url relative for some of them, so no URL parsing would ever see them. Stricter than
 * the RFC's reg-name (no percent-escapes or sub-delims), which no real client sends.
 */
const HOST = /^(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

export interface Admission {
  /**
   * Cheap checks before routing, in the order of their cost: requests in flight, URL, headers.
   * Throws the refusal; on success attaches the body policy (budget and deadline) to the request.
   * `exempt`: probe routes (kubelet, Prometheus) are never refused for capacity. `node`: a node
   * route with a registration token configured, which may go past RELAY_MAX_CONNECTIONS by its
   * headroom and has the node share of the body budget. `client`: whose body it is (its address).
   * `route`: the matched route's body limit; a larger declared body is refused here, unread.
   */
  admit(req: Request, exempt: boolean, pendingRequests: number | undefined, node?: boolean, client?: { readonly clientId: string }, route?: BodyRoute): void;
  readonly budget: BodyBudget;
}

/**
 * `idleTimeoutSeconds`: the server's (RELAY_IDLE_TIMEOUT_SECONDS); a body's hold never sets a
 * connection's idle timeout below it (src/http/body-budget.ts holdForBody).
 */
export function createAdmission(bounds: BoundsConfig, metrics: Metrics, maxBodyBytes = 0, idleTimeoutSeconds = 0): Admission {
  const budget = new BodyBudget(bounds.maxInflightBodyBytes, maxBodyBytes);
  // Clients filling the cap (paced polls, slow uploads) must not lock nodes out: node routes have
  // room of their own beyond it (D.NODE_CONNECTION_HEADROOM_SHARE).
  const nodeMaxConnections = bounds.maxConnections + Math.ceil(bounds.maxConnections * NODE_CONNECTION_HEADROOM_SHARE);
  new Gauge({
    name: "tokenplace_relay_inflight_body_bytes",
    help: "Request-body bytes being read right now (declared lengths reserved up front), against RELAY_MAX_INFLIGHT_BODY_BYTES.",
    registers: [metrics.registry],
    collect() {
      this.set(budget.inUse);
    },
  });

  function admit(req: Request, exempt: boolean, pendingRequests: number | undefined, node = false, client?: { readonly clientId: string }, route?: BodyRoute): void {
    // Bun's count includes this request.
    if (!exempt && pendingRequests !== undefined && pendingRequests > (node ? nodeMaxConnections : bounds.maxConnections)) throw admissionErrors.connectionsFull();
    if (targetLength(req.url) > bounds.maxUrlBytes) throw admissionErrors.uriTooLong(bounds.maxUrlBytes);
    let bytes = 0;
    let fields = 0;
    // Whether a body is framed (RFC 9112 §6.1-6.3), seen in the same pass: asking req.body would
    // build a ReadableStream, and reading the body after that takes Bun's slower stream path.
    let framed = false;
    let badLength = false;
    let badHost = false;
    req.headers.forEach((value, name) => {
      bytes += name.length + value.length + 4;
      fields++;
      if (name === "content-length") {
        framed = true;
        if (!CONTENT_LENGTH.test(value)) badLength = true;
      } else if (name === "transfer-encoding") framed = true;
      else if (name === "host" && value !== "" && !HOST.test(value)) badHost = true;
    });
    if (fields > MAX_HEADER_FIELDS) throw admissionErrors.tooManyHeaders(MAX_HEADER_FIELDS);
    if (bytes > bounds.maxHeaderBytes) throw admissionErrors.headersTooLarge(bounds.maxHeaderBytes);
    if (badHost) throw admissionErrors.invalidHost();
    if (!framed) return;
    // Every reader after this one (route limit, body reader, memory guard, proxy) may take
    // Number(content-length) as the declared size.
    if (badLength) throw admissionErrors.invalidContentLength();
    const maxBytes = route?.maxBodyBytes;
    if (maxBytes === undefined) {
      attachBodyPolicy(req, { budget, node, client, deadline: performance.now() + bounds.bodyTimeoutMs, timeoutMs: bounds.bodyTimeoutMs, idleTimeoutSeconds });
      return;
    }
    // Before routing, the token check and a byte of the body: a flood of oversized bodies on a
    // small route costs one header lookup each (RFC 9112 §6.2: the framing declares the length).
    if (Number(req.headers.get("content-length") ?? 0) > maxBytes) throw bodyTooLargeFor(route!);
    const tooLarge = () => bodyTooLargeFor(route!);
    attachBodyPolicy(req, { budget, node, client, deadline: performance.now() + bounds.bodyTimeoutMs, timeoutMs: bounds.bodyTimeoutMs, idleTimeoutSeconds, maxBytes, tooLarge });
  }

  return { admit, budget };
}

/** Length of the request target (path and query) inside Bun's absolute req.url. */
function targetLength(url: string): number {
  if (url.startsWith("/")) return url.length; // Bun leaves req.url relative for some Host values
  const scheme = url.indexOf("://");
  const slash = scheme < 0 ? 0 : url.indexOf("/", scheme + 3);
  return slash < 0 ? 0 : url.length - slash;
}
