/**
 * The benchmark's baseline: the least a Bun HTTP server can do for the same requests. It reads
 * and parses the JSON body and answers a small JSON, like the relay, but has no routing table,
 * broker, metrics, logging or request ids. Relay figures are reported as ratios against it,
 * measured in the same run, because absolute numbers on a shared machine mean little.
 *
 * Proxy mode (section "memory"): with BASELINE_PROXY_UPSTREAM set, every GET but /healthz is
 * forwarded there with fetch and its body streamed back, the least a Bun proxy holds per open
 * stream: BASELINE_PROXY_MODE=native hands fetch's body to the response (Bun pipes it natively,
 * JavaScript never sees a chunk), =pump reads it chunk by chunk into a direct stream, as the
 * relay must to count bytes and run its idle watchdog (src/proxy/stream.ts).
 *
 * Hold mode (section "memory", always on): `POST /hold` reads and parses its JSON body like any
 * POST, then is answered only when its client goes away (req.signal aborts), the least a Bun
 * server keeps per held request, beside the relay's held `servers/poll`; `GET /held` answers how
 * many are held right now (the relay's long_polls_waiting gauge plays that part), so the bench can
 * confirm all are held before it reads RSS and all released before it reads it again.
 * `POST /collect` runs a full collection (`Bun.gc(true)`), as the relay's memory guard does once
 * load has passed (src/ops/memory-guard.ts): a bare server that allocates nothing after its load
 * may not collect for a long time, so its RSS after load is read both without and with one.
 *
 * Prints `{"msg":"listening","port":N}` on stdout, like the relay.
 */

const port = Number(process.env.BASELINE_PORT ?? "0");
const JSON_HEADERS = { "Content-Type": "application/json" };
// About as long as a real base64 PEM key, so GET answers are the size of the relay's.
const FAKE_KEY = "K".repeat(604);

const PROXY_UPSTREAM = process.env.BASELINE_PROXY_UPSTREAM;
const PROXY_MODE = process.env.BASELINE_PROXY_MODE === "pump" ? "pump" : "native";

let held = 0;

/** A held request: answered (to nobody) when its client has gone; no timer, no idle timeout. */
function hold(req: Request): Promise<Response> {
  held++;
  return new Promise((resolve) => {
    const release = () => {
      held--;
      resolve(new Response(null, { status: 204 }));
    };
    if (req.signal.aborted) release();
    else req.signal.addEventListener("abort", release, { once: true });
  });
}

async function proxy(req: Request, upstream: string): Promise<Response> {
  const url = new URL(req.url);
  const res = await fetch(upstream + url.pathname + url.search, { signal: req.signal, decompress: false, timeout: false, redirect: "manual" } as BunFetchRequestInit);
  if (!res.body || PROXY_MODE === "native") return new Response(res.body, { status: res.status, headers: res.headers });
  const reader = res.body.getReader();
  const body = new ReadableStream<Uint8Array>({
    type: "direct",
    async pull(controller: ReadableStreamDirectController) {
      for (;;) {
        const chunk = await reader.read().catch(() => ({ done: true as const, value: undefined }));
        if (chunk.done) return controller.close();
        controller.write(chunk.value);
        await controller.flush();
      }
    },
    cancel() {
      reader.cancel().catch(() => {});
    },
  });
  return new Response(body, { status: res.status, headers: res.headers });
}

const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  development: false,
  // A held stream is not idle: the upstream decides when it ends.
  ...(PROXY_UPSTREAM ? { idleTimeout: 0 } : {}),
  // The hold-mode paths are told apart with endsWith, not a URL parse: this server is also the
  // reference round trip of other sections, whose requests should cost what they cost before.
  async fetch(req, srv) {
    if (req.method === "GET" && req.url.endsWith("/held")) return new Response(JSON.stringify({ held }), { headers: JSON_HEADERS });
    if (PROXY_UPSTREAM && req.method === "GET" && new URL(req.url).pathname !== "/healthz") return proxy(req, PROXY_UPSTREAM);
    if (req.method === "POST") {
      if (req.url.endsWith("/collect")) {
        Bun.gc(true);
        return new Response(JSON.stringify({ collected: true }), { headers: JSON_HEADERS });
      }
      let body: unknown;
      try {
        body = await req.json();
      } catch {
        body = undefined;
      }
      if (body === null || typeof body !== "object" || Array.isArray(body)) {
        return new Response(JSON.stringify({ error: "Invalid request data" }), { status: 400, headers: JSON_HEADERS });
      }
      if (req.url.endsWith("/hold")) {
        // As the relay does for its long polls: a held request is not idle.
        srv.timeout(req, 0);
        return hold(req);
      }
      return new Response(JSON.stringify({ message: "Request received" }), { headers: JSON_HEADERS });
    }
    return new Response(JSON.stringify({ server_public_key: FAKE_KEY }), { headers: JSON_HEADERS });
  },
});

console.log(JSON.stringify({ msg: "listening", port: server.port }));

const shutdown = () => {
  void server.stop(true).finally(() => process.exit(0));
};
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
