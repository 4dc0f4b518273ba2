import type { Logger } from "pino";

/** Per-request facts the server adapter knows and handlers need, without touching Bun.serve. */
export interface RequestContext {
  readonly requestId: string;
  readonly log: Logger;
  /** Peer address as the socket saw it, if known. */
  readonly clientIp: string | undefined;
  /** Lift the server's idle timeout for this request (long-polls, streams). */
  holdOpen(): void;
  /** Route template for metrics and logs; handlers that route further may refine it. */
  route: string;
}
