/**
 * The benchmark scenarios. Payloads have the sizes of real token.place traffic (base64 PEM keys,
 * a short encrypted chat history), but are random base64: the relay never looks inside them.
 */
import { randomBytes } from "node:crypto";
import { distribution, getJson, postJson, runLoad, type Distribution, type LoadResult } from "./load.ts";

export interface BenchParams {
  concurrency: number;
  /** Measured time per scenario per round. */
  roundMs: number;
  warmupMs: number;
  maxIterations: number;
  samples: number;
  /** Pause that lets a /sink reach the relay and be held before the job is posted. */
  settleMs: number;
}

const b64 = (bytes: number) => randomBytes(bytes).toString("base64");
/** A base64 PEM RSA-2048 public key is 604 characters; so is this. */
export const fakeKey = (): string => b64(453);

export function faucetBody(serverKey: string): string {
  return JSON.stringify({
    server_public_key: serverKey,
    client_public_key: fakeKey(),
    chat_history: b64(512),
    cipherkey: b64(256),
    iv: b64(16),
  });
}

const jobIn = (json: Record<string, unknown>) => typeof json.chat_history === "string";

/**
 * Makes `key` a registered node with an empty queue: a /sink registers it (and is held), a job
 * releases that held poll. Polling /faucet until it stops answering 404 avoids guessing when the
 * registration landed.
 */
export async function registerNode(relay: string, key: string): Promise<void> {
  const held = postJson(`${relay}/sink`, JSON.stringify({ server_public_key: key }));
  held.catch(() => {}); // awaited below; this only keeps an early failure from going unhandled
  for (let i = 0; i < 200; i++) {
    const { status, json } = await postJson(`${relay}/faucet`, faucetBody(key));
    if (status === 200) break;
    if (status !== 404) throw new Error(`/faucet during registration: ${status} ${JSON.stringify(json)}`);
    await Bun.sleep(5);
  }
  const { status, json } = await held;
  if (status !== 200 || !jobIn(json)) throw new Error(`/sink during registration: ${status} ${JSON.stringify(json)}`);
}

/** Plain POSTs of a faucet-sized body to the baseline. */
export function baselinePosts(baseline: string, p: BenchParams, durationMs: number): Promise<LoadResult> {
  const body = faucetBody(fakeKey());
  return runLoad({
    concurrency: p.concurrency,
    durationMs,
    maxIterations: p.maxIterations,
    iteration: async () => (await postJson(`${baseline}/faucet`, body)).status === 200,
  });
}

/** Each worker owns a registered node: POST /faucet a job for it, then POST /sink takes it. */
export function faucetSinkPairs(relay: string, nodeKeys: string[], p: BenchParams, durationMs: number): Promise<LoadResult> {
  const sinkBodies = nodeKeys.map((k) => JSON.stringify({ server_public_key: k }));
  // Built once, like the baseline's body: the load generator's own work must not differ.
  const faucetBodies = nodeKeys.map((k) => faucetBody(k));
  return runLoad({
    concurrency: nodeKeys.length,
    durationMs,
    maxIterations: p.maxIterations,
    iteration: async (w) => {
      const queued = await postJson(`${relay}/faucet`, faucetBodies[w]!);
      if (queued.status !== 200) throw new Error(`/faucet ${queued.status} ${JSON.stringify(queued.json)}`);
      const taken = await postJson(`${relay}/sink`, sinkBodies[w]!);
      return taken.status === 200 && jobIn(taken.json);
    },
  });
}

export function gets(url: string, p: BenchParams, durationMs: number, expectKey: boolean): Promise<LoadResult> {
  return runLoad({
    concurrency: p.concurrency,
    durationMs,
    maxIterations: p.maxIterations,
    iteration: async () => {
      const { status, json } = await getJson(url);
      return status === 200 && (!expectKey || typeof json.server_public_key === "string");
    },
  });
}

export interface DispatchResult {
  /** /faucet sent -> held /sink answered with the job. */
  dispatch: Distribution;
  /** /faucet sent -> /faucet answered. */
  faucetAck: Distribution;
  /** One plain POST round trip to the baseline: the floor any HTTP exchange pays here. */
  baselineRtt: Distribution;
  /** Raw dispatch samples in ms, in order. */
  dispatchSamples: number[];
  /** Samples where the job was not delivered by the held poll (should be 0). */
  misses: number;
}

/**
 * One node holds /sink; the client posts a job; time until the node has it. Each sample is
 * paired with one baseline round trip taken right before it, so both see the same noise.
 */
export async function dispatchLatency(relay: string, baseline: string, p: BenchParams): Promise<DispatchResult> {
  const key = fakeKey();
  await registerNode(relay, key);
  const sinkBody = JSON.stringify({ server_public_key: key });
  const plainBody = faucetBody(fakeKey());
  const dispatch: number[] = [];
  const acks: number[] = [];
  const rtts: number[] = [];
  let misses = 0;
  for (let i = 0; i < p.samples; i++) {
    const b0 = performance.now();
    const plain = await postJson(`${baseline}/faucet`, plainBody);
    rtts.push(performance.now() - b0);
    if (plain.status !== 200) throw new Error(`baseline answered ${plain.status}`);
    // Timestamp the moment the answer is parsed, not the moment this loop gets to await it.
    const sink = postJson(`${relay}/sink`, sinkBody).then((r) => ({ ...r, at: performance.now() }));
    sink.catch(() => {});
    await Bun.sleep(p.settleMs);
    const t0 = performance.now();
    const queued = await postJson(`${relay}/faucet`, faucetBody(key));
    acks.push(performance.now() - t0);
    if (queued.status !== 200) throw new Error(`/faucet ${queued.status} ${JSON.stringify(queued.json)}`);
    const got = await sink;
    if (got.status === 200 && jobIn(got.json)) dispatch.push(got.at - t0);
    else misses++;
  }
  return { dispatch: distribution(dispatch), dispatchSamples: dispatch, faucetAck: distribution(acks), baselineRtt: distribution(rtts), misses };
}
