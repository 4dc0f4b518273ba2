/**
 * API v1 steps the benchmarks share: the bodies the real peers send, a fake node's registration,
 * and the held-poll wake-latency measurement (`npm run bench -- --only=wake` and
 * `npm run bench:v1`). A wake-up is posted only once the relay's gauge shows the poll held, so every
 * sample is a real wake-up and never an immediate answer.
 */
import { distribution, type Distribution } from "./load.ts";
import { fakeKey } from "./scenarios.ts";
import { heldOn } from "./state.ts";
import { NODE_CAPABILITIES as CAPABILITIES, PROTOCOL } from "../src/demo/protocol.ts";

// ------------------------------------------------------------------------------ HTTP

export interface Answer {
  status: number;
  json: Record<string, unknown>;
  /** performance.now() when the answer was parsed (not when the caller got round to awaiting it). */
  at: number;
}

export async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(20_000),
  });
  const json = (await res.json()) as Record<string, unknown>;
  return { status: res.status, json, at: performance.now() };
}

export const b64 = (bytes: number) => Buffer.from(crypto.getRandomValues(new Uint8Array(bytes))).toString("base64");
export const describe = (a: Answer) => `${a.status} ${JSON.stringify(a.json).slice(0, 200)}`;

/** A fake node: a registered key (its control credential is not needed for poll/responses). */
export async function registerNode(relay: string, nodeAuth: Record<string, string>): Promise<string> {
  const key = fakeKey();
  const r = await post(`${relay}/api/v1/relay/servers/register`, { server_public_key: key, capabilities: CAPABILITIES }, nodeAuth);
  if (r.status !== 200) throw new Error(`servers/register: ${describe(r)}`);
  return key;
}

/** What client.py sends to `requests` (spec §6.6), and what server.py sends to `responses` (§6.8). */
export function v1Bodies(nodeKey: string, clientKey: string) {
  const ciphertext = b64(512);
  const cipherkey = b64(256);
  const iv = b64(16);
  const common = (request_id: string) => ({ client_public_key: clientKey, request_id, protocol: PROTOCOL, version: 1, chat_history: ciphertext, cipherkey, iv });
  return {
    request: (id: string) => JSON.stringify({ server_public_key: nodeKey, ...common(id) }),
    response: (id: string) => JSON.stringify(common(id)),
    poll: JSON.stringify({ server_public_key: nodeKey }),
    retrieve: (id: string) => JSON.stringify({ client_public_key: clientKey, request_id: id }),
  };
}

// ------------------------------------------------------------------------------ what is measured where

/**
 * One place a measurement runs. `hold` is the relay the node polls (and registers) and the client
 * retrieves on; `post` is the relay the wake-ups (POST requests, POST responses) go to. The same
 * relay for "one relay"; relay A and relay B for the cross-replica figures.
 */
export type Scope = "memory" | "redis" | "redisCrossReplica";
export interface Place {
  scope: Scope;
  hold: string;
  post: string;
}

// ------------------------------------------------------------------------------ (b) wake latency

export interface WakeSeries {
  poll: number[];
  retrieve: number[];
  requestAck: number[];
}

export interface WakeResult {
  series: Record<string, WakeSeries>;
  baselineRtt: Distribution;
  misses: number;
  firstMiss?: string;
}

const POLL_ROUTE = "servers/poll";
const RETRIEVE_ROUTE = "responses/retrieve";

/**
 * Holds `route` on `relay` with `send()`, and resolves once the relay's gauge shows it held (or
 * with `false` after 2 s, the held answer still awaited by the caller). Reading the gauge before
 * too means a hold left over from elsewhere cannot pass for this one.
 */
async function holdConfirmed(relay: string, route: string, send: () => Promise<Answer>, settleMs: number) {
  const before = await heldOn(relay, route);
  const held = send();
  held.catch(() => {});
  await Bun.sleep(settleMs);
  const deadline = performance.now() + 2_000;
  let ok = false;
  while (performance.now() < deadline) {
    if ((await heldOn(relay, route)) > before) {
      ok = true;
      break;
    }
    await Bun.sleep(1);
  }
  return { held, ok };
}

export interface WakeOptions {
  samples: number;
  /** Lets a poll or retrieve reach the relay before the gauge is asked whether it is held. */
  settleMs: number;
  /** The registration token header a node sends (X-Relay-Server-Token). */
  nodeAuth: Record<string, string>;
}

export async function wakeLatency(places: Place[], baseline: string, o: WakeOptions): Promise<WakeResult> {
  const NODE_AUTH = o.nodeAuth;
  const bodies = await Promise.all(places.map(async (p) => v1Bodies(await registerNode(p.hold, NODE_AUTH), fakeKey())));
  const series: Record<string, WakeSeries> = Object.fromEntries(places.map((p) => [p.scope, { poll: [], retrieve: [], requestAck: [] }]));
  const plain = JSON.stringify({ chat_history: b64(512) });
  const rtts: number[] = [];
  let misses = 0;
  let firstMiss: string | undefined;
  const miss = (what: string) => {
    misses++;
    firstMiss ??= what;
  };

  const sample = async (p: Place, body: ReturnType<typeof v1Bodies>, s: WakeSeries, i: number) => {
    const id = `bench-v1-${p.scope}-${i}-${crypto.randomUUID()}`;
    const poll = await holdConfirmed(p.hold, POLL_ROUTE, () => post(`${p.hold}/api/v1/relay/servers/poll`, body.poll, NODE_AUTH), o.settleMs);
    if (!poll.ok) miss(`${p.scope}: servers/poll was not held within 2 s`);
    const t0 = performance.now();
    const admitted = await post(`${p.post}/api/v1/relay/requests`, body.request(id));
    if (admitted.status !== 200) throw new Error(`${p.scope}: requests: ${describe(admitted)}`);
    s.requestAck.push(admitted.at - t0);
    const work = await poll.held;
    if (work.status === 200 && work.json.request_id === id) {
      if (poll.ok) s.poll.push(work.at - t0);
    } else {
      miss(`${p.scope}: servers/poll gave ${describe(work)}`);
      return;
    }

    const retrieve = await holdConfirmed(p.hold, RETRIEVE_ROUTE, () => post(`${p.hold}/api/v1/relay/responses/retrieve`, body.retrieve(id)), o.settleMs);
    if (!retrieve.ok) miss(`${p.scope}: responses/retrieve was not held within 2 s`);
    const t1 = performance.now();
    const answered = await post(`${p.post}/api/v1/relay/responses`, body.response(id), NODE_AUTH);
    if (answered.status !== 200) throw new Error(`${p.scope}: responses: ${describe(answered)}`);
    const got = await retrieve.held;
    if (got.status === 200 && got.json.request_id === id) {
      if (retrieve.ok) s.retrieve.push(got.at - t1);
    } else miss(`${p.scope}: responses/retrieve gave ${describe(got)}`);
  };

  for (let i = 0; i < o.samples; i++) {
    const b0 = performance.now();
    const p = await post(`${baseline}/plain`, plain);
    if (p.status !== 200) throw new Error(`baseline answered ${p.status}`);
    rtts.push(p.at - b0);
    // Every backend each round, starting with a different one each time: drift hits all alike.
    for (let k = 0; k < places.length; k++) {
      const j = (i + k) % places.length;
      await sample(places[j]!, bodies[j]!, series[places[j]!.scope]!, i);
    }
  }
  const out: WakeResult = { series, baselineRtt: distribution(rtts), misses };
  if (firstMiss !== undefined) out.firstMiss = firstMiss;
  return out;
}

