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
 *
 * `CEILING_LAYERS` (comma-separated; none by default) adds, one by one, the layers every request
 * of a production relay pays whatever its protocol logic, each done with the relay's own module
 * where it has one, so `npm run bench:layers` (bench/layers.ts) can price them on this machine:
 *   id        the request id (src/http/request-id.ts: reads the request's headers, a UUID)
 *   ip        the client's socket address (server.requestIP: a getpeername call)
 *   deadline  the body read as text under a deadline timer, raced like src/http/json.ts does
 *   headers   the answer's X-Request-Id and CORS headers, set on the built Response (src/app.ts)
 *   metrics   the request counter and duration histogram (src/ops/metrics.ts observeRequest)
 *   log       the request line (src/log.ts createRequestLine, pino, batched writes to /dev/null)
 */
import { openSync } from "node:fs";
import { createBatchedStdout, createLogger, createRequestLine } from "../src/log.ts";
import { createMetrics } from "../src/ops/metrics.ts";
import { requestIdFor } from "../src/http/request-id.ts";
import { CEILING_LAYERS, type CeilingLayer } from "./ceiling-layers.ts";
const layers = new Set((process.env.CEILING_LAYERS ?? "").split(",").filter(Boolean));
for (const l of layers) if (!(CEILING_LAYERS as readonly string[]).includes(l)) throw new Error(`CEILING_LAYERS: unknown layer ${l} (known: ${CEILING_LAYERS.join(", ")})`);
const L = Object.fromEntries(CEILING_LAYERS.map((l) => [l, layers.has(l)])) as Record<CeilingLayer, boolean>;
const metrics = L.metrics ? createMetrics(undefined, { processMetrics: false }) : undefined;
const requestLine = L.log ? createRequestLine(createLogger("info", createBatchedStdout(openSync("/dev/null", "w")))) : undefined;
const CORS = { "Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Retry-After" };
const BODY_DEADLINE_MS = 10_000;

async function readText(req: Request): Promise<string> {
  const reading = req.text();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error("body deadline")), BODY_DEADLINE_MS);
  });
  expired.catch(() => {});
  try {
    return await Promise.race([reading, expired]);
  } finally {
    clearTimeout(timer);
  }
}

async function layered(req: Request): Promise<Response> {
  const started = performance.now();
  const requestId = L.id ? requestIdFor(req) : "";
  if (L.ip) server.requestIP(req);
  const pathname = new URL(req.url).pathname;
  const route = routes[pathname];
  let res: Response;
  if (req.method !== "POST" || !route) res = json({ status: "ok" });
  else res = route((L.deadline ? JSON.parse(await readText(req)) : await req.json()) as Body);
  if (L.headers) {
    res.headers.set("X-Request-Id", requestId || "-");
    for (const [k, v] of Object.entries(CORS)) res.headers.set(k, v);
  }
  const seconds = (performance.now() - started) / 1000;
  metrics?.observeRequest(req.method, pathname, res.status, seconds);
  requestLine?.("info", requestId || "-", req.method, pathname, res.status, Math.round(seconds * 1e4) / 10);
  return res;
}

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
    if (layers.size > 0) return layered(req);
    const route = routes[new URL(req.url).pathname];
    if (req.method !== "POST" || !route) return json({ status: "ok" });
    return route((await req.json()) as Body);
  },
});

console.log(JSON.stringify({ msg: "listening", port: server.port }));
const shutdown = () => void server.stop(true).finally(() => process.exit(0));
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
