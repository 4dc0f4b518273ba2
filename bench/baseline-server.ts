/**
 * The benchmark's baseline: the least a Bun HTTP server can do for the same requests. It reads
 * and parses the JSON body and answers a small JSON, like the relay, but has no routing table,
 * broker, metrics, logging or request ids. Relay figures are reported as ratios against it,
 * measured in the same run, because absolute numbers on a shared machine mean little.
 *
 * Prints `{"msg":"listening","port":N}` on stdout, like the relay.
 */

const port = Number(process.env.BASELINE_PORT ?? "0");
const JSON_HEADERS = { "Content-Type": "application/json" };
// About as long as a real base64 PEM key, so GET answers are the size of the relay's.
const FAKE_KEY = "K".repeat(604);

const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  development: false,
  async fetch(req) {
    if (req.method === "POST") {
      let body: unknown;
      try {
        body = await req.json();
      } catch {
        body = undefined;
      }
      if (body === null || typeof body !== "object" || Array.isArray(body)) {
        return new Response(JSON.stringify({ error: "Invalid request data" }), { status: 400, headers: JSON_HEADERS });
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
