/**
 * The ceiling for the broker cycles (`npm run bench -- --only=cycles`): a bare `Bun.serve` doing
 * the same steps as the relay with plain Maps and no checks at all: no validation, limits,
 * registration token, metrics, logging, expiry or hold. It parses each JSON body and answers a
 * JSON body like the relay, so what the relay costs beyond it is its own layers, not the work.
 *
 * API v1: requests (queue per node key) -> servers/poll (shift) -> responses (answer per
 * request_id) -> responses/retrieve (take). Legacy: /faucet -> /sink -> /source (answer per
 * client key) -> /retrieve. servers/register answers like the relay (nothing to check here).
 *
 * Prints `{"msg":"listening","port":N}` on stdout, like the relay; any other path answers 200 (so
 * /healthz works for the start-up figure).
 */
export {};

type Body = Record<string, unknown>;

const port = Number(process.env.CEILING_PORT ?? "0");
const JSON_HEADERS = { "Content-Type": "application/json" };
const json = (value: unknown) => new Response(JSON.stringify(value), { headers: JSON_HEADERS });

const v1Queues = new Map<string, Body[]>();
const v1Answers = new Map<string, Body>();
const legacyQueues = new Map<string, Body[]>();
const legacyAnswers = new Map<string, Body>();

function push(m: Map<string, Body[]>, key: string, value: Body): void {
  const q = m.get(key);
  if (q) q.push(value);
  else m.set(key, [value]);
}

const routes: Record<string, (b: Body) => Response> = {
  "/api/v1/relay/servers/register": () => json({ status: "registered", control_credential: "ceiling", poll_wait_seconds: 10 }),
  "/api/v1/relay/requests": (b) => {
    push(v1Queues, String(b.server_public_key), b);
    return json({ status: "queued", request_id: b.request_id });
  },
  "/api/v1/relay/servers/poll": (b) => {
    const work = v1Queues.get(String(b.server_public_key))?.shift();
    return json(work ?? { status: "idle", next_poll_seconds: 0 });
  },
  "/api/v1/relay/responses": (b) => {
    v1Answers.set(String(b.request_id), b);
    return json({ status: "stored" });
  },
  "/api/v1/relay/responses/retrieve": (b) => {
    const id = String(b.request_id);
    const answer = v1Answers.get(id);
    if (!answer) return json({ status: "pending" });
    v1Answers.delete(id);
    return json(answer);
  },
  "/faucet": (b) => {
    push(legacyQueues, String(b.server_public_key), b);
    return json({ message: "Request received" });
  },
  "/sink": (b) => json({ ...(legacyQueues.get(String(b.server_public_key))?.shift() ?? {}), next_ping_in_x_seconds: 0 }),
  "/source": (b) => {
    legacyAnswers.set(String(b.client_public_key), b);
    return json({ message: "Response received and queued for client" });
  },
  "/retrieve": (b) => {
    const key = String(b.client_public_key);
    const answer = legacyAnswers.get(key);
    if (!answer) return json({ error: "No response available for the given public key" });
    legacyAnswers.delete(key);
    return json(answer);
  },
};

const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  development: false,
  async fetch(req) {
    const route = routes[new URL(req.url).pathname];
    if (req.method !== "POST" || !route) return json({ status: "ok" });
    return route((await req.json()) as Body);
  },
});

console.log(JSON.stringify({ msg: "listening", port: server.port }));
const shutdown = () => void server.stop(true).finally(() => process.exit(0));
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
