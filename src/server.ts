import type { Server } from "bun";
import type { App, ServerAdapter } from "./app.ts";
import { json } from "./http/json.ts";

export interface ServeOptions {
  host: string;
  port: number;
  idleTimeoutSeconds: number;
}

/**
 * Bun's own body limit answers an empty 413 without X-Request-Id, so it is set far above the
 * relay's: the relay refuses by Content-Length before reading and counts chunked bodies, so its
 * JSON 413 is what clients see.
 */
const BUN_BODY_LIMIT = 4 * 1024 ** 3;

/** The only place that touches Bun.serve. */
export function serve(app: App, opts: ServeOptions): Server<undefined> {
  // One adapter for the server's lifetime (it is told the request on each call), not three
  // closures per request.
  let adapter: ServerAdapter | undefined;
  const adapterFor = (server: Server<undefined>): ServerAdapter => ({
    clientIp: (r) => server.requestIP(r)?.address,
    holdOpen: (r, seconds = 0) => server.timeout(r, seconds),
    pendingRequests: () => server.pendingRequests,
  });
  return Bun.serve({
    hostname: opts.host,
    port: opts.port,
    idleTimeout: opts.idleTimeoutSeconds,
    maxRequestBodySize: BUN_BODY_LIMIT,
    development: false,
    // Said explicitly: with development off, Bun 1.4 binds with SO_REUSEPORT unless told not to, so
    // a second relay started on the same port would share it silently (each holding half the nodes
    // and clients of a memory store) instead of failing with EADDRINUSE.
    reusePort: false,
    fetch(req, server) {
      return app.fetch(req, (adapter ??= adapterFor(server)));
    },
    error() {
      return json(500, { error: { message: "Internal relay error", code: 500, type: "internal_error" } });
    },
  });
}
