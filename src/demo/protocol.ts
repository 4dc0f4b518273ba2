/**
 * The token.place API v1 E2EE relay protocol as the demo's peers speak it: route paths, the node's
 * capabilities, and the three plaintexts that only the two ends ever see (token.place API v1 relay
 * spec §9, §6.9). Shapes follow upstream `client.py` and `utils/networking/relay_client.py`.
 */
import type { Json } from "./http.ts";

export const PROTOCOL = "tokenplace_api_v1_relay_e2ee";
export const VERSION = 1;
export const MODEL_ID = "qwen3-8b-instruct";

/** All v1 relay routes live under this prefix at the relay's origin (spec §1). */
export const ROUTES = {
  register: "/api/v1/relay/servers/register",
  poll: "/api/v1/relay/servers/poll",
  control: "/api/v1/relay/servers/control",
  unregister: "/api/v1/relay/servers/unregister",
  next: "/api/v1/relay/servers/next",
  requests: "/api/v1/relay/requests",
  cancel: "/api/v1/relay/requests/cancel",
  responses: "/api/v1/relay/responses",
  progress: "/api/v1/relay/progress",
  retrieve: "/api/v1/relay/responses/retrieve",
} as const;

/** What an unmodified node on the default profile advertises (spec §5.1), sent on register and every poll. */
export const NODE_CAPABILITIES = {
  api_version: "v1",
  supported_model_ids: [MODEL_ID],
  active_context_tier: "8k-fast",
  maximum_total_context_tokens: 8192,
  default_output_token_reservation: 1024,
  maximum_output_tokens: 8192,
  max_concurrency: 1,
  backend_class: "cpu",
} as const;

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

export interface ApiV1Request {
  model: string;
  messages: ChatMessage[];
  /** Generation options; optional on the wire (upstream reads a missing one as `{}`). */
  options?: Json;
}

/** Client -> node plaintext. */
export interface RequestPlaintext {
  protocol: typeof PROTOCOL;
  version: typeof VERSION;
  request_id: string;
  client_public_key: string;
  api_v1_request: ApiV1Request;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** Upstream's node leaves out finish_reason, usage and output_budget when its runtime has none. */
export interface ApiV1Answer {
  message: { role: "assistant"; content: string };
  finish_reason?: string;
  usage?: Usage;
  output_budget?: { requested_tokens: number; available_tokens: number; effective_tokens: number };
}

/** A node that could not serve the request says why, still encrypted (upstream `_api_v1_response_envelope`). */
export interface ApiV1Error {
  error: { code: string; message: string };
}

export type ApiV1Response = ApiV1Answer | ApiV1Error;

/** Node -> client plaintext of the answer. */
export interface ResponsePlaintext {
  protocol: typeof PROTOCOL;
  version: typeof VERSION;
  request_id: string;
  client_public_key: string;
  api_v1_response: ApiV1Response;
}

export type ProgressPhase = "preparing" | "prefill" | "generating";

export interface ProgressCounters {
  phase: ProgressPhase;
  total_prompt_tokens: number;
  cached_prompt_tokens: number;
  processed_prompt_tokens: number;
  generated_tokens: number;
  elapsed_ms: number;
}

export interface Progress extends ProgressCounters {
  schema_version: 1;
  sequence: number;
}

/** Node -> client plaintext of a progress update (spec §6.9). */
export interface ProgressPlaintext {
  protocol: typeof PROTOCOL;
  version: typeof VERSION;
  request_id: string;
  client_public_key: string;
  api_v1_progress: Progress;
}

const isObject = (v: unknown): v is Json => v !== null && typeof v === "object" && !Array.isArray(v);
const nonEmpty = (v: unknown): v is string => typeof v === "string" && v.trim() !== "";
const sameKeys = (o: Json, keys: string[]) => JSON.stringify(Object.keys(o).sort()) === JSON.stringify([...keys].sort());

const isChatMessages = (v: unknown): v is ChatMessage[] =>
  Array.isArray(v) &&
  v.every((m) => isObject(m) && typeof m.content === "string" && ["system", "user", "assistant"].includes(m.role as string));

/** Bound to this pair: right protocol and version, this request id, this client key. */
function isBound(v: unknown, requestId: string | undefined, clientKey: string): v is Json {
  return (
    isObject(v) &&
    v.protocol === PROTOCOL &&
    v.version === VERSION &&
    nonEmpty(v.request_id) &&
    (requestId === undefined || v.request_id === requestId) &&
    v.client_public_key === clientKey
  );
}

/**
 * The node's checks (upstream `_extract_api_v1_request_payload`): the key inside the ciphertext must
 * equal the relay's `client_public_key`, or a relay could redirect the answer to another key.
 */
export function isRequestPlaintext(v: unknown, outerClientKey: string): v is RequestPlaintext {
  if (!isBound(v, undefined, outerClientKey) || !isObject(v.api_v1_request)) return false;
  const r = v.api_v1_request;
  return nonEmpty(r.model) && isChatMessages(r.messages) && (r.options === undefined || isObject(r.options));
}

/** The client's checks (upstream `client.py` `retrieve_response`), plus the key binding. */
export function isResponsePlaintext(v: unknown, requestId: string, clientKey: string): v is ResponsePlaintext {
  if (!isBound(v, requestId, clientKey) || !isObject(v.api_v1_response)) return false;
  const { message: m, error: e } = v.api_v1_response;
  if (isObject(e)) return typeof e.code === "string";
  return isObject(m) && typeof m.role === "string" && typeof m.content === "string";
}

const PROGRESS_KEYS = ["schema_version", "sequence", "phase", "total_prompt_tokens", "cached_prompt_tokens", "processed_prompt_tokens", "generated_tokens", "elapsed_ms"];
const COUNTERS = ["total_prompt_tokens", "cached_prompt_tokens", "processed_prompt_tokens", "generated_tokens", "elapsed_ms"] as const;

/** The browser client's checks (upstream `static/inference_progress.js` `validProgressEnvelope`). */
export function isProgressPlaintext(v: unknown, requestId: string, clientKey: string, lastSequence: number): v is ProgressPlaintext {
  if (!isBound(v, requestId, clientKey) || !sameKeys(v, ["protocol", "version", "request_id", "client_public_key", "api_v1_progress"])) return false;
  const p = v.api_v1_progress;
  if (!isObject(p) || !sameKeys(p, PROGRESS_KEYS) || p.schema_version !== 1) return false;
  if (!Number.isSafeInteger(p.sequence) || (p.sequence as number) <= lastSequence) return false;
  if (!["preparing", "prefill", "generating"].includes(p.phase as string)) return false;
  if (!COUNTERS.every((k) => Number.isSafeInteger(p[k]) && (p[k] as number) >= 0)) return false;
  const [total, cached, processed] = [p.total_prompt_tokens, p.cached_prompt_tokens, p.processed_prompt_tokens] as number[];
  return total === 0 || (cached! <= processed! && processed! <= total!);
}
