/**
 * The page's side of the API v1 relay routes (relay spec §6.5-6.7, §6.10) and of /relay/status,
 * with every way they can fail turned into one `Problem`: a plain sentence for the person and
 * what they can do next. Only ciphertext envelopes, public keys, ids and the cancel proof are
 * ever sent; the text someone typed never appears in a body built here.
 */

export const PROTOCOL = "tokenplace_api_v1_relay_e2ee";
export const VERSION = 1;
const V1 = "/api/v1/relay";

export type ProblemKind =
  | "no_node_online"
  | "no_node_for_model"
  | "busy"
  | "rate_limited"
  | "relay_full"
  | "node_gone"
  | "cancelled"
  | "expired"
  | "unknown_request"
  | "unreachable"
  | "decryption_failed"
  | "node_error"
  | "insecure_context"
  | "unexpected";

export class Problem extends Error {
  constructor(
    readonly kind: ProblemKind,
    message: string,
    /** Seconds to wait before trying again, when the relay said (Retry-After). */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = "Problem";
  }
}

export interface PublicStatus {
  nodes_online: number;
  queue_depth: number;
  in_flight: number;
  default_model: string;
  models: { id: string; context_tiers: string[]; nodes: number }[];
}

export interface Selection {
  serverPublicKey: string;
  /** The tier of the node that was picked (spec §6.5: may be larger than asked, "spillover"). */
  selectedContextTier: string;
}

export type RetrieveOutcome =
  | { kind: "answer"; envelope: { chat_history: string; cipherkey: string; iv: string } }
  | { kind: "pending"; progress?: unknown };

export const TIER_LABELS: Record<string, string> = { "8k-fast": "8K tokens, fast", "64k-full": "64K tokens, full" };
export const tierLabel = (t: string) => TIER_LABELS[t] ?? t;

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);

/** Reads a JSON body without failing: an error page or an empty body is just `undefined`. */
async function bodyOf(res: Response): Promise<Record<string, unknown> | undefined> {
  try {
    const v: unknown = await res.json();
    return isObject(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

/** The `error.code` of a v1 error body (a string code, or the HTTP status as a number). */
function codeOf(body: Record<string, unknown> | undefined): string | undefined {
  const e = body?.error;
  if (!isObject(e)) return undefined;
  return e.code === undefined || e.code === null ? undefined : String(e.code);
}

function retryAfter(res: Response): number | undefined {
  const raw = res.headers.get("retry-after");
  if (raw === null) return undefined;
  const s = /^\s*\d+\s*$/.test(raw) ? Number(raw) : Math.ceil((Date.parse(raw) - Date.now()) / 1000);
  return Number.isFinite(s) && s >= 0 ? Math.max(1, Math.ceil(s)) : undefined;
}

const seconds = (n: number) => (n === 1 ? "1 second" : `${n} seconds`);

/** What every route may answer beyond its own cases: rate limits and full relays. */
function commonProblem(res: Response, code: string | undefined): Problem | undefined {
  if (res.status === 429 && code !== "queue_full") {
    const wait = retryAfter(res);
    return new Problem(
      "rate_limited",
      wait === undefined
        ? "The relay is getting too many requests from this address. Wait a little, then send again."
        : `The relay is getting too many requests from this address. You can send again in ${seconds(wait)}.`,
      wait,
    );
  }
  if (res.status === 429) {
    return new Problem("busy", "The chosen node has a full queue. Send again in a few seconds.", retryAfter(res));
  }
  if (code === "requests_full" || code === "storage_full" || code === "answers_full") {
    return new Problem("relay_full", "The relay is at its capacity right now. Send again in a minute.", retryAfter(res));
  }
  return undefined;
}

function unexpected(what: string, res: Response): Problem {
  return new Problem("unexpected", `The relay answered ${what} with HTTP ${res.status}, which this page does not expect. Send again; if it keeps happening, the relay may be misconfigured.`);
}

/** fetch, with a network failure (not an HTTP error) turned into "unreachable". */
async function call(input: string, init: RequestInit): Promise<Response> {
  try {
    return await fetch(input, { ...init, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" });
  } catch (err) {
    if (err instanceof DOMException && err.name === "AbortError") throw err;
    throw new Problem("unreachable", "The relay cannot be reached. Check your connection, then send again.");
  }
}

const postJson = (path: string, body: unknown, signal?: AbortSignal) =>
  call(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), ...(signal ? { signal } : {}) });

export async function fetchStatus(): Promise<PublicStatus> {
  const res = await call("/relay/status", { method: "GET" });
  const body = await bodyOf(res);
  if (!res.ok || !body || !Array.isArray(body.models)) throw unexpected("the status request", res);
  return body as unknown as PublicStatus;
}

/** GET servers/next: a node that serves `model` at `tier` (spec §6.5). */
export async function selectNode(model: string, tier: string): Promise<Selection> {
  const q = new URLSearchParams({ model, context_tier: tier });
  const res = await call(`${V1}/servers/next?${q.toString()}`, { method: "GET" });
  const body = await bodyOf(res);
  if (res.ok && typeof body?.server_public_key === "string") {
    const selected = typeof body.selected_context_tier === "string" ? body.selected_context_tier : tier;
    return { serverPublicKey: body.server_public_key, selectedContextTier: selected };
  }
  const code = codeOf(body);
  const common = commonProblem(res, code);
  if (common) throw common;
  switch (code) {
    case "no_registered_compute_nodes":
      throw new Problem("no_node_online", "No compute node is online right now, so nobody can answer. Try again when one connects: the line at the top shows when it does.");
    case "no_matching_compute_node":
      throw new Problem("no_node_for_model", `No online node serves ${model} with ${tierLabel(tier)} of context. Pick another model or context size above, then send again.`);
    case "no_available_capacity":
      throw new Problem("busy", `Every node that serves ${model} is busy. Send again in a few seconds.`);
    case "invalid_context_tier":
      throw new Problem("no_node_for_model", "The relay does not know that context size. Pick another one above.");
  }
  throw unexpected("the node choice", res);
}

export interface QueuedRequest {
  /** Seconds until the relay gives up on it (request_ttl_seconds). */
  ttlSeconds: number;
}

/** POST requests: queue the sealed request for the chosen node (spec §6.6). */
export async function queueRequest(body: {
  server_public_key: string;
  client_public_key: string;
  chat_history: string;
  cipherkey: string;
  iv: string;
  request_id: string;
  cancel_token: string;
}): Promise<QueuedRequest> {
  const res = await postJson(`${V1}/requests`, { ...body, protocol: PROTOCOL, version: VERSION });
  const out = await bodyOf(res);
  if (res.status === 200) {
    const ttl = typeof out?.request_ttl_seconds === "number" ? out.request_ttl_seconds : 480;
    return { ttlSeconds: ttl };
  }
  const common = commonProblem(res, codeOf(out));
  if (common) throw common;
  if (res.status === 404) throw new Problem("node_gone", "The chosen node went offline just as the message left. Send again to reach another one.");
  throw unexpected("the message", res);
}

/**
 * POST responses/retrieve once (spec §6.10). The relay holds it until the answer, a progress
 * update or the end arrives (a few seconds at most), so the caller simply asks again on "pending".
 */
export async function retrieveOnce(clientPublicKey: string, requestId: string, signal: AbortSignal): Promise<RetrieveOutcome> {
  const res = await postJson(`${V1}/responses/retrieve`, { client_public_key: clientPublicKey, request_id: requestId }, signal);
  const body = await bodyOf(res);
  if (res.status === 200 && body && typeof body.chat_history === "string" && typeof body.cipherkey === "string" && typeof body.iv === "string") {
    return { kind: "answer", envelope: { chat_history: body.chat_history, cipherkey: body.cipherkey, iv: body.iv } };
  }
  if (res.status === 202) return body?.encrypted_progress === undefined ? { kind: "pending" } : { kind: "pending", progress: body.encrypted_progress };
  const code = codeOf(body);
  const common = commonProblem(res, code);
  if (common) throw common;
  if (res.status === 410) {
    const reason = isObject(body?.error) ? body.error.reason : undefined;
    if (reason === "server_unregistered") throw new Problem("node_gone", "The node went offline before it answered. Send again to reach another one.");
    if (code === "cancelled") throw new Problem("cancelled", "Cancelled. Nothing more will arrive for that message; it is back in the box below.");
    throw new Problem("expired", "No node answered in time, so the relay gave up on the message. Send again.");
  }
  if (res.status === 404) throw new Problem("unknown_request", "The relay no longer knows this message (it may have restarted). Send again.");
  throw unexpected("the wait for an answer", res);
}

/** POST requests/cancel with the proof only this page holds (spec §6.7). True when the relay confirmed. */
export async function cancelRequest(clientPublicKey: string, requestId: string, cancelToken: string): Promise<boolean> {
  try {
    const res = await postJson(`${V1}/requests/cancel`, {
      client_public_key: clientPublicKey,
      request_id: requestId,
      cancel_token: cancelToken,
      status: "cancelled",
      reason: "requester_cancelled",
    });
    return res.status === 200;
  } catch {
    return false;
  }
}
