import type { Logger } from "pino";

/** Per-request facts the server adapter knows and handlers need, without touching Bun.serve. */
export interface RequestContext {
  readonly requestId: string;
  readonly log: Logger;
  /** Peer address as the socket saw it, if known. */
  readonly clientIp: string | undefined;
  /**
   * Who the client is for limits and per-address caps: the socket address, or behind a trusted
   * proxy the address it vouched for (src/http/client-ip.ts); IPv6 counted per /64. Never a header
   * the client chose.
   */
  readonly clientId: string;
  /**
   * False when this request's debug lines would be dropped: a handler then skips building them
   * (key fingerprints hash a ~600-character key each). Unset: treat as enabled.
   */
  readonly debugEnabled?: boolean;
  /**
   * Lift the server's idle timeout for this request (long-polls, streams), or with `seconds` set
   * it to that many seconds (a large body for a slow reader, src/http/delivery.ts).
   */
  holdOpen(seconds?: number): void;
  /** Route template for metrics and logs; handlers that route further may refine it. */
  route: string;
}
