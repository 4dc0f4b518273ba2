import type { Exchange } from "./exchange.ts";
import { classify, type FailureKind } from "./failure.ts";
import type { HeaderField } from "./headers.ts";

/** The fetch the proxy calls; injectable so tests can drive the handler without sockets. */
export type FetchFn = (input: string | URL | Request, init?: BunFetchRequestInit) => Promise<Response>;

export class UpstreamFailure extends Error {
  constructor(
    readonly kind: FailureKind,
    override readonly cause: unknown,
  ) {
    super(`upstream ${kind}: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = "UpstreamFailure";
  }
}

export interface OpenOptions {
  fetch: FetchFn;
  url: string;
  method: string;
  headers: Headers | HeaderField[];
  body: Bun.BodyInit | null;
  ex: Exchange;
  /** Bounds connecting and waiting for the head; a streamed upload re-arms it once it is sent. */
  firstByteMs: number;
}

/**
 * Sends one request upstream and waits for its response head. Every Bun default that is wrong
 * for a proxy is overridden on purpose (see ../../docs/proxy.md, "Bun defaults"):
 * - decompress: false  - fetch would gunzip but keep Content-Encoding and Content-Length;
 * - timeout: false     - the hidden ~300 s inactivity timeout; our watchdogs replace it;
 * - redirect: manual   - a 3xx is the upstream's answer for the client, not for the relay;
 * - duplex: half       - the request body streams instead of being buffered first;
 * - proxy: false       - HTTP(S)_PROXY in the environment must not reroute in-cluster traffic.
 */
export async function openUpstream(o: OpenOptions): Promise<Response> {
  o.ex.arm(o.firstByteMs, "timeout");
  try {
    const res = await o.fetch(o.url, {
      method: o.method,
      headers: o.headers,
      body: o.body,
      signal: o.ex.signal,
      redirect: "manual",
      decompress: false,
      timeout: false,
      proxy: false,
      duplex: "half",
    } as BunFetchRequestInit);
    o.ex.headReceived = true;
    o.ex.disarm();
    return res;
  } catch (err) {
    o.ex.disarm();
    throw new UpstreamFailure(classify(err, o.ex.signal.reason, false), err);
  }
}

/** Status class label of tokenplace_relay_upstream_requests_total. */
export function statusClass(status: number): string {
  return status >= 100 && status < 600 ? `${Math.floor(status / 100)}xx` : "error";
}
