import type { Logger } from "pino";

/** The longest idle timeout Bun takes (Bun.serve's idleTimeout and server.timeout() are at most 255 s). */
export const BUN_MAX_IDLE_TIMEOUT_SECONDS = 255;

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
  /**
   * holdOpen for a response that streams after the handler returns (a proxied stream, a large
   * answer): the app leaves the timeout alone when the handler returns, and the stream calls
   * idleAgain() when it has written its last byte. Without it the app restores the idle timeout
   * as the handler returns.
   */
  holdWhileStreaming(seconds?: number): void;
  /** Back to the server's idle timeout (RELAY_IDLE_TIMEOUT_SECONDS) for the rest of the connection. */
  idleAgain(): void;
  /** Route template for metrics and logs; handlers that route further may refine it. */
  route: string;
}
