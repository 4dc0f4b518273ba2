import type { Server } from "bun";
import type { App } from "./app.ts";
import { json } from "./http/json.ts";

export interface ServeOptions {
  host: string;
  port: number;
  maxBodyBytes: number;
  idleTimeoutSeconds: number;
}

/**
 * The only place that touches Bun.serve. Bun's own body limit answers an empty 413, so it is set
 * well above the relay's limit: the relay's JSON 413 is what clients see.
 */
export function serve(app: App, opts: ServeOptions): Server<undefined> {
  return Bun.serve({
    hostname: opts.host,
    port: opts.port,
    idleTimeout: opts.idleTimeoutSeconds,
    maxRequestBodySize: opts.maxBodyBytes * 2 + 64 * 1024,
    development: false,
    fetch(req, server) {
      return app.fetch(req, {
        clientIp: (r) => server.requestIP(r)?.address,
        holdOpen: (r) => server.timeout(r, 0),
      });
    },
    error() {
      return json(500, { error: { message: "Internal relay error", code: 500, type: "internal_error" } });
    },
  });
}
