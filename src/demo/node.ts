/**
 * A demo compute node speaking the token.place API v1 relay protocol like upstream `server.py`
 * (`utils/networking/relay_client.py` `RelayClient`): it reaches out to the relay (no inbound port),
 * registers with its capabilities, long-polls for work, decrypts each job with its private key,
 * proves ownership on `servers/control` while the fake model runs, optionally publishes encrypted
 * progress, answers encrypted for the client, and unregisters when stopped.
 */
import { generateKeyPair, type KeyPair } from "./crypto.ts";
import { openWorkItem, sealAnswer, sealProgress, type OpenedWork } from "./envelopes.ts";
import { lastUserMessage, runFakeModel } from "./fake-model.ts";
import { callJson, isAbort, sleep, type Json, type WireTap } from "./http.ts";
import { NODE_CAPABILITIES, PROTOCOL, ROUTES, type ApiV1Answer, type ProgressCounters } from "./protocol.ts";

export type NodeEventBody =
  | { type: "registered"; credentialIssued: boolean; progress: boolean }
  /** A job decrypted; `ciphertext` is what the relay handed over, `prompt` what only the node can read. */
  | { type: "claimed"; requestId: string; prompt: string; ciphertext: string }
  | { type: "control"; requestId: string; status: string; acknowledge: boolean }
  | { type: "progress"; requestId: string; sequence: number; phase: string; httpStatus: number }
  | { type: "answered"; requestId: string; httpStatus: number }
  /** The relay ended the job (cancelled/expired/...): the node stopped and posted nothing. */
  | { type: "stopped"; requestId: string; status: string }
  | { type: "unregistered"; httpStatus: number }
  | { type: "error"; detail: string; httpStatus?: number };
export type NodeEvent = NodeEventBody & { at: number };

export interface ComputeNodeOptions {
  relayUrl: string;
  /** Sent as X-Relay-Server-Token on every node route when set (token.place API v1 relay spec §3.1). */
  token?: string;
  keys?: KeyPair;
  /** Fake model speed: time per generated word or prefill chunk. */
  stepMs?: number;
  /**
   * Longest pause between control checks while a job runs. Upstream obeys `next_poll_seconds`
   * clamped to 1..10 s (10 s at upstream defaults); checking more often only costs a small request,
   * and lets a cancel show promptly. Default 1 s, upstream's floor.
   */
  maxControlIntervalMs?: number;
  onEvent?: (event: NodeEvent) => void;
  wireTap?: WireTap;
}

export interface ComputeNode {
  readonly publicKeyB64: string;
  /** Starts registering and polling in the background. */
  start(): void;
  /** Aborts any held poll or running job, waits for the loop, then unregisters. */
  stop(): Promise<void>;
  readonly stats: { answered: number; stopped: number; lastError: string | undefined };
}

/** Terminal control statuses (upstream `_API_V1_TERMINAL_CONTROL_STATUS_MAP`). */
const TERMINAL = new Set(["cancelled", "expired", "completed", "unavailable", "completed/unavailable"]);
/** Statuses after which upstream's progress publisher gives up on a request. */
const PROGRESS_FATAL = new Set([400, 401, 403, 404, 405, 410, 413, 422]);
const REQUEST_TIMEOUT_MS = 10_000;
const CONTROL_TIMEOUT_MS = 4_000;
const SIDEBAND_TIMEOUT_MS = 2_000;
const PROGRESS_INTERVAL_MS = 1_000;
/** Deadline a node assumes when the work item carries none (upstream's compatibility value). */
const DEFAULT_DEADLINE_S = 300;
const ERROR_BACKOFF_MS = 1_000;

const positive = (v: unknown): number | undefined => (typeof v === "number" && Number.isFinite(v) && v > 0 ? v : undefined);
const nonNegative = (v: unknown): number | undefined => (typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : undefined);

/** Re-register before the lease can lapse: `max(min(0.8 L, L - 1), 0.5 L)` (upstream `_api_v1_refresh_threshold_seconds`). */
const refreshAfterMs = (leaseS: number) => Math.max(Math.min(0.8 * leaseS, leaseS - 1), 0.5 * leaseS) * 1000;
/** A held poll must be allowed to outlast the relay's hold: `max(10, w + 5, 1.25 w)`. */
const pollTimeoutMs = (pollWaitS: number) => Math.max(10, pollWaitS + 5, 1.25 * pollWaitS) * 1000;

class ControlEnded extends Error {
  constructor(readonly status: string) {
    super(`control: ${status}`);
  }
}

export async function createComputeNode(opts: ComputeNodeOptions): Promise<ComputeNode> {
  const keys = opts.keys ?? (await generateKeyPair());
  const relayUrl = opts.relayUrl.replace(/\/+$/, "");
  const nodeAbort = new AbortController();
  const stats: ComputeNode["stats"] = { answered: 0, stopped: 0, lastError: undefined };
  const headers: Record<string, string> = opts.token ? { "X-Relay-Server-Token": opts.token } : {};
  const reg = { live: false, credential: undefined as string | undefined, leaseS: 30, pollWaitS: 10, progress: false, heartbeatAt: 0 };
  let loop: Promise<void> | undefined;

  const emit = (event: NodeEventBody) => {
    if (event.type === "error") stats.lastError = event.detail;
    opts.onEvent?.({ ...event, at: performance.now() });
  };

  /** `signal` null: only the timeout bounds the call (unregister runs after the node's own abort). */
  async function post(path: string, body: Json, timeoutMs: number, signal: AbortSignal | null = nodeAbort.signal) {
    const res = await callJson(relayUrl, "POST", path, body, { timeoutMs, headers, ...(signal ? { signal } : {}) });
    opts.wireTap?.({ from: "node", method: "POST", path, status: res.status, request: body, response: res.json });
    return res;
  }

  async function register(): Promise<boolean> {
    const { status, json } = await post(ROUTES.register, { server_public_key: keys.publicKeyB64, capabilities: NODE_CAPABILITIES }, REQUEST_TIMEOUT_MS);
    if (status !== 200) {
      emit({ type: "error", detail: `servers/register answered ${status}: ${JSON.stringify(json)}`, httpStatus: status });
      return false;
    }
    // The credential comes once per registration; renewing a live one returns none, so keep ours.
    const issued = typeof json.control_credential === "string" && json.control_credential !== "";
    if (issued) reg.credential = json.control_credential as string;
    reg.leaseS = positive(json.next_ping_in_x_seconds) ?? reg.leaseS;
    reg.pollWaitS = nonNegative(json.poll_wait_seconds) ?? reg.pollWaitS;
    // Progress only when the relay says exactly true (spec §5.2).
    reg.progress = (json.relay_capabilities as Json | undefined)?.encrypted_progress_v1 === true;
    reg.live = true;
    reg.heartbeatAt = performance.now();
    emit({ type: "registered", credentialIssued: issued, progress: reg.progress });
    return true;
  }

  /** One control call; throws ControlEnded when the job must stop, retries itself on transient trouble. */
  async function control(requestId: string, acknowledge: boolean, signal: AbortSignal): Promise<Json> {
    let backoffMs = 1_000;
    for (;;) {
      try {
        const body = { server_public_key: keys.publicKeyB64, request_id: requestId, control_credential: reg.credential ?? "", acknowledge };
        const { status, json } = await post(ROUTES.control, body, CONTROL_TIMEOUT_MS, signal);
        if (status === 401 || status === 403) throw new ControlEnded("owner_proof_failed");
        if (status === 200) {
          const s = String(json.status ?? "").toLowerCase();
          emit({ type: "control", requestId, status: s, acknowledge });
          if (!acknowledge && TERMINAL.has(s)) throw new ControlEnded(s);
          return json;
        }
        // Upstream: anything but 200, 401/403, 429 and 5xx means the request is gone.
        if (status !== 429 && status < 500) throw new ControlEnded("unavailable");
      } catch (err) {
        if (err instanceof ControlEnded || signal.aborted) throw err;
      }
      await sleep(backoffMs, signal);
      backoffMs = Math.min(backoffMs * 2, 10_000);
    }
  }

  /** Publishes at most one update a second, a phase change at once (upstream `_ApiV1ProgressPublisher`). */
  function progressPublisher(requestId: string, clientKey: string) {
    let enabled = reg.progress;
    let sequence = 0;
    let lastPhase: string | undefined;
    let lastSentAt = -Infinity;
    return async (counters: ProgressCounters): Promise<void> => {
      const now = performance.now();
      if (!enabled || (counters.phase === lastPhase && now - lastSentAt < PROGRESS_INTERVAL_MS)) return;
      lastPhase = counters.phase;
      lastSentAt = now;
      sequence++;
      const body = await sealProgress(keys.publicKeyB64, reg.credential ?? "", clientKey, requestId, sequence, counters);
      try {
        // Awaited, so updates leave in order and never after the answer.
        const { status } = await post(ROUTES.progress, body, SIDEBAND_TIMEOUT_MS);
        if (PROGRESS_FATAL.has(status)) enabled = false;
        emit({ type: "progress", requestId, sequence, phase: counters.phase, httpStatus: status });
      } catch (err) {
        // Best effort, like upstream: a lost update never fails the job.
        if (!isAbort(err)) emit({ type: "error", detail: `progress: ${String(err)}` });
      }
    };
  }

  async function handle(item: Json): Promise<void> {
    let work: OpenedWork;
    try {
      work = await openWorkItem(keys, item);
    } catch (err) {
      emit({ type: "error", detail: err instanceof Error ? err.message : String(err) });
      return;
    }
    const { clientKey, requestId, request } = work;
    emit({ type: "claimed", requestId, prompt: lastUserMessage(request.messages), ciphertext: work.ciphertext });
    // The work item's own deadline, else upstream's assumed 300 s.
    const ttl = [item.request_deadline_remaining_seconds, item.request_ttl_seconds].map(positive).filter((v) => v !== undefined);
    let deadline = performance.now() + (ttl.length ? Math.min(...ttl) : DEFAULT_DEADLINE_S) * 1000;
    if (!reg.credential) {
      emit({ type: "error", detail: "no control credential for this relay: refusing to answer (upstream: missing_control_credential)" });
      return;
    }

    const job = new AbortController();
    const signal = AbortSignal.any([nodeAbort.signal, job.signal]);
    /** One owner check-in: ends the job by throwing ControlEnded, else returns the pause before the next. */
    const checkIn = async (): Promise<number> => {
      const res = await control(requestId, false, signal);
      const left = [res.request_deadline_remaining_seconds, res.request_ttl_seconds].map(nonNegative).filter((v) => v !== undefined);
      if (left.length) deadline = Math.min(deadline, performance.now() + Math.min(...left) * 1000);
      const hintMs = Math.min(Math.max(nonNegative(res.next_poll_seconds) ?? 1, 1), 10) * 1000;
      return Math.min(hintMs, opts.maxControlIntervalMs ?? 1_000);
    };
    const endJob = (err: unknown) => {
      if (!job.signal.aborted) job.abort(err);
    };

    let answer: ApiV1Answer | undefined;
    // The first check-in comes before any work: the relay must confirm the job is still active.
    let pauseMs = 0;
    try {
      pauseMs = await checkIn();
    } catch (err) {
      endJob(err);
    }
    if (!job.signal.aborted) {
      const controlLoop = (async () => {
        for (;;) {
          await sleep(Math.min(pauseMs, Math.max(0, deadline - performance.now())), signal);
          if (signal.aborted) return;
          if (performance.now() >= deadline) throw new ControlEnded("local_deadline");
          pauseMs = await checkIn();
        }
      })().catch(endJob);
      try {
        answer = await runFakeModel(request, { stepMs: opts.stepMs ?? 100, signal, onProgress: progressPublisher(requestId, clientKey) });
      } catch {
        answer = undefined;
      } finally {
        endJob(new Error("done"));
        await controlLoop;
      }
    }
    if (nodeAbort.signal.aborted) return;
    const reason: unknown = job.signal.reason;
    const ended = reason instanceof ControlEnded ? reason.status : performance.now() >= deadline ? "local_deadline" : undefined;
    if (!answer || ended) {
      // Stop and post nothing; cancelled/expired are acknowledged so the relay drops its tombstone.
      const status = ended ?? "failed";
      if (status === "cancelled" || status === "expired") {
        await control(requestId, true, AbortSignal.any([nodeAbort.signal, AbortSignal.timeout(SIDEBAND_TIMEOUT_MS)])).catch(() => undefined);
      }
      stats.stopped++;
      emit({ type: "stopped", requestId, status });
      return;
    }

    const body = await sealAnswer(clientKey, requestId, answer);
    const { status, json } = await post(ROUTES.responses, body, REQUEST_TIMEOUT_MS);
    // Upstream does not retry a refused answer: anything but 200 means the request is gone.
    if (status === 200) stats.answered++;
    else emit({ type: "error", detail: `responses answered ${status}: ${JSON.stringify(json)}`, httpStatus: status });
    emit({ type: "answered", requestId, httpStatus: status });
  }

  async function run(): Promise<void> {
    const signal = nodeAbort.signal;
    while (!signal.aborted) {
      try {
        if (!reg.live || performance.now() - reg.heartbeatAt >= refreshAfterMs(reg.leaseS)) {
          if (!(await register())) {
            await sleep(ERROR_BACKOFF_MS, signal);
            continue;
          }
        }
        const { status, json } = await post(ROUTES.poll, { server_public_key: keys.publicKeyB64, capabilities: NODE_CAPABILITIES }, pollTimeoutMs(reg.pollWaitS));
        if (status === 404) {
          // Evicted or unknown: register again at once (a fresh credential comes with it).
          reg.live = false;
          continue;
        }
        if (status !== 200) {
          emit({ type: "error", detail: `servers/poll answered ${status}: ${JSON.stringify(json)}`, httpStatus: status });
          await sleep(ERROR_BACKOFF_MS, signal);
          continue;
        }
        reg.heartbeatAt = performance.now();
        reg.pollWaitS = nonNegative(json.poll_wait_seconds) ?? reg.pollWaitS;
        if (json.protocol === PROTOCOL) {
          // Then poll again at once: an early poll only renews the lease, whereas sleeping the
          // lease (upstream, when the item has no next_ping_in_x_seconds) idles the node 30 s.
          await handle(json);
          continue;
        }
        const next = nonNegative(json.next_ping_in_x_seconds);
        if (next && next > 0) reg.leaseS = next;
        await sleep((next ?? reg.leaseS) * 1000, signal);
      } catch (err) {
        if (signal.aborted) break;
        // A poll that timed out client-side is an empty long poll; anything else is worth a pause.
        if (isAbort(err)) continue;
        emit({ type: "error", detail: err instanceof Error ? err.message : String(err) });
        await sleep(ERROR_BACKOFF_MS, signal);
      }
    }
  }

  return {
    publicKeyB64: keys.publicKeyB64,
    stats,
    start() {
      loop ??= run().catch((err: unknown) => emit({ type: "error", detail: `node loop crashed: ${String(err)}` }));
    },
    async stop() {
      nodeAbort.abort();
      await loop;
      if (!reg.live || !reg.credential) return;
      reg.live = false;
      try {
        const body = { server_public_key: keys.publicKeyB64, control_credential: reg.credential };
        const { status } = await post(ROUTES.unregister, body, REQUEST_TIMEOUT_MS, null);
        emit({ type: "unregistered", httpStatus: status });
      } catch (err) {
        emit({ type: "error", detail: `servers/unregister failed: ${String(err)}` });
      }
    },
  };
}
