import { SMALL_ROUTE_MAX_BODY_BYTES } from "../config/defaults.ts";
import type { BrokerLimits } from "../config/index.ts";
import type { RequestContext } from "../http/context.ts";
import type { Deliver } from "../http/delivery.ts";
import { json, readJsonObject } from "../http/json.ts";
import type { Metrics } from "../ops/metrics.ts";
import type { LongPoll } from "../common/long-poll.ts";
import { CLIENT_PACE_MS, type Pacer } from "../common/pacing.ts";
import type { RouteTable } from "../http/routes.ts";
import { topics, type Answer, type BrokerStore, type Job, type Notifier, type StreamDrain } from "./types.ts";
import { LEGACY_FIELD_BOUNDS as BOUNDS, checkChunkSize, checkFieldLengths, hasCiphertext, isKey, isOptionalBool, limitErrors, protocolErrors, withoutNulls } from "./validate.ts";

export interface BrokerDeps {
  store: BrokerStore;
  notifier: Notifier;
  /** Holds of compute nodes (/sink). */
  longPoll: LongPoll;
  /** Holds of clients (/retrieve, /stream/retrieve): a budget of their own. */
  clientLongPoll: LongPoll;
  metrics: Metrics;
  limits: BrokerLimits;
  maxBodyBytes: number;
  /** Paces client polls past their address's hold share (src/common/pacing.ts); absent: answered at once. */
  pacer?: Pacer;
  /** Fresh stream session ids; injectable for tests. */
  newId?: () => string;
  /** Hands out an answer taken from the store, or gives it back if the connection ends first (src/http/delivery.ts). */
  deliver: Deliver;
}

/** After a held poll (or when work was found) the node should come straight back. */
const REPOLL_NOW = 0;
/**
 * While draining, polls answer at once: "0" would have every node hammer the relay in a tight
 * loop until it stops, so nodes come back in a second (through the Service, to a new pod).
 */
export const DRAIN_NEXT_PING_SECONDS = 1;
/**
 * A client poll past its address's share of held polls (RELAY_MAX_HOLDS_PER_IP) or past the hold
 * budget is paced (src/common/pacing.ts): its "none yet" comes a second late, with `Retry-After` of the same
 * length. API v1 answers such polls 429 (its clients read the status); legacy peers do not. The
 * legacy protocol's "none yet" is status 200 with an error body (relay-protocol, "POST /retrieve"
 * and "POST /stream/retrieve": existing clients read the body, not the status), and upstream
 * token.place's own legacy end-to-end test (test_integration.py, early history) asserts status 200
 * on every /retrieve poll, so a 429 would end its loop. The reference client (which polls every
 * 2 s with a 10 s timeout, relay-protocol "What existing peers do") sees only a normal poll; one
 * more look at the store at the pace's end hands over whatever arrived meanwhile. Past the
 * address's share of paces the "none yet" comes at once and the connection is closed.
 */
const CLIENT_PACE_HEADERS = { "Retry-After": String(CLIENT_PACE_MS / 1000) };
const CLIENT_PACE_FULL_HEADERS = { ...CLIENT_PACE_HEADERS, Connection: "close" };

/**
 * The legacy protocol (relay-protocol of token.place before API v1). Upstream serves /sink,
 * /faucet, /source, /retrieve and /next_server only behind TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES
 * and the stream routes always (API v1 relay spec §12). Polls and retrieves carry only a key: small
 * bodies (D.SMALL_ROUTE_MAX_BODY_BYTES).
 */
export const brokerRoutes = {
  nextServer: { method: "GET", path: "/next_server", legacy: true },
  faucet: { method: "POST", path: "/faucet", legacy: true, limit: "public" },
  sink: { method: "POST", path: "/sink", legacy: true, auth: "server-token", maxBodyBytes: SMALL_ROUTE_MAX_BODY_BYTES },
  source: { method: "POST", path: "/source", legacy: true, auth: "server-token" },
  retrieve: { method: "POST", path: "/retrieve", legacy: true, maxBodyBytes: SMALL_ROUTE_MAX_BODY_BYTES },
  streamSource: { method: "POST", path: "/stream/source", auth: "server-token" },
  streamRetrieve: { method: "POST", path: "/stream/retrieve", maxBodyBytes: SMALL_ROUTE_MAX_BODY_BYTES },
} as const satisfies RouteTable;

export function createBrokerHandlers(deps: BrokerDeps) {
  const { store, notifier, longPoll, clientLongPoll, limits } = deps;
  const newId = deps.newId ?? (() => crypto.randomUUID());
  const read = (req: Request) => readJsonObject(req, deps.maxBodyBytes);
  /**
   * Work for `topic` is now available: wake its held polls. A store that publishes its wake-ups
   * itself (BrokerStore.publishesWakes) already told the other replicas; this process's are left.
   */
  const wake = (topic: string) => notifier.notify(topic, { published: store.publishesWakes });

  /**
   * Holds a poll for its route's hold (RELAY_LONG_POLL_MS); each look is told how much of the hold
   * is left, so a store that publishes wake-ups knows how long a poll may wait for this topic.
   */
  function holdPoll<T>(poll: LongPoll, req: Request, ctx: RequestContext, topic: string, look: (holdMs: number) => Promise<T | undefined>) {
    const holdMs = limits.longPollMs;
    const end = performance.now() + holdMs;
    return poll.hold(req, ctx, topic, () => look(Math.max(0, end - performance.now())), holdMs);
  }

  /**
   * A client poll that found nothing without being held waits out the pace and looks once more:
   * always when the address's share of holds ("ip_limit") or the hold budget ("overflow") was
   * full, and past the address's allowance of such answers per second when holds are off. Unless
   * its address has its share of paced polls already; `headers` are the answer's (Retry-After, and
   * Connection: close past the share).
   */
  async function paced<T>(req: Request, ctx: RequestContext, held: { value: T | undefined; outcome: string }, attempt: () => Promise<T | undefined>) {
    if (held.value !== undefined || !deps.pacer) return { value: held.value, headers: undefined };
    const refused = held.outcome === "ip_limit" || held.outcome === "overflow";
    if (!refused && !(held.outcome === "disabled" && deps.pacer.overAllowance(ctx))) return { value: undefined, headers: undefined };
    if (!(await deps.pacer.pace(req, ctx))) return { value: undefined, headers: CLIENT_PACE_FULL_HEADERS };
    return { value: req.signal.aborted ? undefined : await attempt(), headers: CLIENT_PACE_HEADERS };
  }

  async function nextServer(): Promise<Response> {
    const key = await store.pickNode();
    // 200 on purpose: existing clients read the body, not the status (relay-protocol.md).
    if (key === undefined) return json(200, { error: { message: "No servers available", code: 503 } });
    return json(200, { server_public_key: key });
  }

  async function faucet(req: Request): Promise<Response> {
    const body = withoutNulls(await read(req), ["client_public_key", "stream"]);
    if (!body || !isKey(body.server_public_key) || !hasCiphertext(body) || !isOptionalBool(body.stream)) {
      throw protocolErrors.invalidFaucet();
    }
    if (body.client_public_key !== undefined && !isKey(body.client_public_key)) throw protocolErrors.invalidFaucet();
    const stream = body.stream === true;
    if (stream && body.client_public_key === undefined) throw protocolErrors.streamNeedsClientKey();
    checkFieldLengths(body, BOUNDS.faucet);
    if (stream && !(await store.canOpenStream())) throw limitErrors.streamsFull();
    const job: Job = { chat_history: body.chat_history, cipherkey: body.cipherkey, iv: body.iv };
    if (body.client_public_key !== undefined) job.client_public_key = body.client_public_key;
    if (stream) job.stream = true;
    const result = await store.enqueueJob(body.server_public_key, job);
    if (result === "unknown_node") throw protocolErrors.unknownServer();
    if (result === "queue_full") throw limitErrors.queueFull();
    if (result === "node_storage_full") throw limitErrors.nodeStorageFull();
    if (result === "storage_full") throw limitErrors.storageFull();
    wake(topics.job(body.server_public_key));
    return json(200, { message: "Request received" });
  }

  async function sink(req: Request, ctx: RequestContext): Promise<Response> {
    const body = await read(req);
    if (!body || !isKey(body.server_public_key)) throw protocolErrors.invalidPublicKey();
    const batch = body.max_batch_size === undefined ? 1 : body.max_batch_size;
    if (typeof batch !== "number" || !Number.isInteger(batch) || batch < 1) throw protocolErrors.invalidBatchSize();
    checkFieldLengths(body, BOUNDS.sink);
    const key = body.server_public_key;
    if ((await store.touchNode(key)) === "full") throw limitErrors.nodesFull();

    const max = Math.min(batch, limits.maxBatchSize);
    const { value: jobs, outcome } = await holdPoll(longPoll, req, ctx, topics.job(key), async (holdMs) => {
      const taken = await store.takeJobs(key, max, holdMs);
      return taken.length > 0 ? taken : undefined;
    });
    // The node was present for the whole hold: keep it fresh for /next_server.
    await store.touchNode(key);
    // Only a poll the relay really held (or one that got work) may say "come back now".
    const nextPing =
      jobs || outcome === "timeout" ? REPOLL_NOW : outcome === "draining" ? DRAIN_NEXT_PING_SECONDS : limits.nextPingSeconds;
    if (!jobs) return json(200, { next_ping_in_x_seconds: nextPing });

    const dispatched = await Promise.all(jobs.map((job) => withSession(job)));
    deps.metrics.jobsDispatched.inc(jobs.length);
    const response: Record<string, unknown> = { next_ping_in_x_seconds: nextPing, ...dispatched[0] };
    if (batch > 1) response.batch = dispatched;
    return json(200, response);
  }

  async function withSession(job: Job): Promise<Record<string, unknown>> {
    const out: Record<string, unknown> = {
      client_public_key: job.client_public_key,
      chat_history: job.chat_history,
      cipherkey: job.cipherkey,
      iv: job.iv,
    };
    if (job.stream && job.client_public_key !== undefined) {
      const sessionId = newId();
      await store.openStream(job.client_public_key, sessionId);
      out.stream = true;
      out.stream_session_id = sessionId;
      // A client already waiting on /stream/retrieve learns that its session exists.
      wake(topics.stream(job.client_public_key));
    }
    return out;
  }

  async function source(req: Request): Promise<Response> {
    const body = await read(req);
    if (!body || !isKey(body.client_public_key) || !hasCiphertext(body)) throw protocolErrors.invalidData();
    checkFieldLengths(body, BOUNDS.source);
    const answer: Answer = { chat_history: body.chat_history, cipherkey: body.cipherkey, iv: body.iv };
    const stored = await store.putAnswer(body.client_public_key, answer);
    if (stored === "full") throw limitErrors.answersFull();
    if (stored === "storage_full") throw limitErrors.storageFull();
    wake(topics.answer(body.client_public_key));
    return json(200, { message: "Response received and queued for client" });
  }

  async function retrieve(req: Request, ctx: RequestContext): Promise<Response> {
    const body = await read(req);
    if (!body || !isKey(body.client_public_key)) throw protocolErrors.invalidData();
    checkFieldLengths(body, BOUNDS.retrieve);
    const key = body.client_public_key;
    const take = (holdMs = 0) => store.takeAnswer(key, holdMs);
    const { value, headers } = await paced(req, ctx, await holdPoll(clientLongPoll, req, ctx, topics.answer(key), take), take);
    if (!value) return json(200, { error: "No response available for the given public key" }, headers);
    const answer: Answer = { chat_history: value.chat_history, cipherkey: value.cipherkey, iv: value.iv };
    // A large answer the connection does not take whole is queued for the client again (after any
    // that arrived meanwhile: a legacy client asks for one answer at a time).
    return deps.deliver(answer, req, ctx, () => {
      ctx.log.info({ event: "answer_undelivered" }, "client left before its answer was written; queued again for its next /retrieve");
      store.putAnswer(key, answer).then(
        (kept) => {
          if (kept === "stored") wake(topics.answer(key));
          else ctx.log.warn({ event: "answer_lost", reason: kept }, "an undelivered answer could not be queued again");
        },
        (err: unknown) => ctx.log.warn({ err }, "an undelivered answer could not be queued again"),
      );
    });
  }

  async function streamSource(req: Request): Promise<Response> {
    const body = withoutNulls(await read(req), ["final"]);
    if (!body || typeof body.session_id !== "string" || body.chunk === undefined || body.chunk === null || !isOptionalBool(body.final)) {
      throw protocolErrors.invalidData();
    }
    checkFieldLengths(body, BOUNDS.streamSource);
    checkChunkSize(body.chunk);
    const final = body.final === true;
    const result = await store.pushChunk(body.session_id, body.chunk, final);
    switch (result.kind) {
      case "unknown_session":
        throw protocolErrors.unknownStream();
      case "session_full":
        throw limitErrors.chunksFull();
      case "already_final":
        throw limitErrors.streamFinal();
      case "storage_full":
        throw limitErrors.storageFull();
      case "stored":
        wake(topics.stream(result.clientKey));
        return json(200, { message: "Chunk stored", final });
    }
  }

  async function streamRetrieve(req: Request, ctx: RequestContext): Promise<Response> {
    const body = await read(req);
    if (!body || !isKey(body.client_public_key)) throw protocolErrors.invalidData();
    checkFieldLengths(body, BOUNDS.streamRetrieve);
    const key = body.client_public_key;
    let empty: StreamDrain | undefined;
    const drain = async (holdMs = 0) => {
      const drained = await store.drainStream(key, holdMs);
      if (drained && (drained.chunks.length > 0 || drained.final)) return drained;
      empty = drained ?? empty;
      return undefined;
    };
    const { value, headers } = await paced(req, ctx, await holdPoll(clientLongPoll, req, ctx, topics.stream(key), drain), drain);
    const result = value ?? empty;
    if (!result) return json(200, { error: "No active stream for the given public key" }, headers);
    return json(200, { stream: true, session_id: result.sessionId, chunks: result.chunks, final: result.final }, headers);
  }

  return { nextServer, faucet, sink, source, retrieve, streamSource, streamRetrieve };
}

export type BrokerHandlers = ReturnType<typeof createBrokerHandlers>;
