import { RelayError, badGateway, gatewayTimeout, tooLarge, unavailable } from "../errors.ts";
import { bodyTimeout } from "../http/body-budget.ts";

/**
 * Why a proxied exchange ended early. The first seven are the `kind` label of
 * tokenplace_relay_upstream_errors_total; too_large, upload_timeout (the whole upload took longer
 * than RELAY_BODY_TIMEOUT_MS) and shutdown are the relay's own decisions and are counted elsewhere
 * (rejections, the drain log).
 */
export type FailureKind =
  | "connect" | "dns" | "timeout" | "idle" | "client_idle" | "reset" | "client_abort" | "too_large" | "upload_timeout" | "shutdown";

export const COUNTED_KINDS: ReadonlySet<FailureKind> = new Set(["connect", "dns", "timeout", "idle", "client_idle", "reset", "client_abort"]);

/** Abort reason the proxy uses, so a rejected fetch or read says which watchdog fired. */
export class ProxyAbort extends Error {
  constructor(readonly kind: FailureKind) {
    super(`proxy exchange aborted: ${kind}`);
    this.name = "ProxyAbort";
  }
}

// Bun's fetch error codes (1.4.x): ECONNREFUSED, ENOTFOUND, ECONNRESET, plus libuv-style names.
const DNS_CODES = new Set(["ENOTFOUND", "EAI_AGAIN", "EAI_NONAME", "EAI_FAIL", "DNSException"]);
const CONNECT_CODES = new Set(["ECONNREFUSED", "ConnectionRefused", "EHOSTUNREACH", "ENETUNREACH", "EADDRNOTAVAIL", "FailedToOpenSocket", "UnableToConnect"]);
const TIMEOUT_CODES = new Set(["ETIMEDOUT", "Timeout"]);

/**
 * The kind of a fetch or body-read failure. An abort we caused carries its own kind; otherwise
 * the error code decides. Anything unknown after the connection was up is a reset (the stream
 * broke); before the head it is a connect failure.
 */
export function classify(err: unknown, ourReason: unknown, afterHead: boolean): FailureKind {
  if (ourReason instanceof ProxyAbort) return ourReason.kind;
  const code = typeof err === "object" && err !== null ? String((err as { code?: unknown }).code ?? "") : "";
  if (DNS_CODES.has(code)) return "dns";
  if (CONNECT_CODES.has(code)) return "connect";
  if (TIMEOUT_CODES.has(code)) return "timeout";
  if (code === "ECONNRESET" || code === "EPIPE" || code === "ConnectionClosed") return "reset";
  return afterHead ? "reset" : "connect";
}

/** Client went away before the head: nginx's 499, only ever seen in logs and metrics. */
const clientClosed = () => new RelayError(499, "client_closed_request", "Client closed the request");

/** The JSON error the client gets when the exchange failed before the response head. */
export function errorForKind(kind: FailureKind, limit: number, uploadTimeoutMs = 0): RelayError {
  switch (kind) {
    case "dns":
      return badGateway("upstream_dns", "Upstream host name does not resolve");
    case "connect":
      return badGateway("upstream_unreachable", "Upstream refused or could not be reached");
    case "reset":
      return badGateway("upstream_reset", "Upstream closed the connection before answering");
    case "timeout":
      return gatewayTimeout("upstream_timeout", "Upstream did not start answering in time");
    case "idle":
      return gatewayTimeout("upstream_idle", "Upstream stopped reading the request body");
    case "client_idle":
      // The client's own upload stalled: its mistake, not the gateway's (RFC 9110 §15.5.9).
      return new RelayError(408, "client_body_timeout", "Client stopped sending the request body");
    case "too_large":
      return tooLarge(limit);
    case "upload_timeout":
      // A trickling client: its own fault, like client_idle, but bounded in total, not per gap.
      return bodyTimeout(uploadTimeoutMs);
    case "shutdown":
      return unavailable("shutting_down", "Relay is shutting down");
    case "client_abort":
      return clientClosed();
  }
}

/**
 * Safe to try another upstream: the request provably did not reach the first one (RFC 9110
 * §9.2.2 allows automatic retries of non-idempotent requests only then), or the method is
 * idempotent and its body can be sent again.
 */
export function mayFailOver(kind: FailureKind, method: string, bodyReplayable: boolean): boolean {
  if (!bodyReplayable) return false;
  if (kind === "connect" || kind === "dns") return true;
  const idempotent = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"].includes(method);
  return idempotent && (kind === "timeout" || kind === "reset");
}
