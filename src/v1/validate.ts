import type { JsonObject } from "../http/json.ts";
import { v1Errors } from "./errors.ts";
import { isAscii } from "./memory/state.ts";
import { CONTEXT_TIERS, type Capabilities, type ContextTier, type Envelope } from "./store.ts";

/**
 * Bounds on routing fields. Real peers send RSA-2048 keys as base64 PEM (~600 characters), 43-
 * character credentials and ~45-character request ids; the limits leave ample room and keep a
 * hostile client from parking megabytes in keys that are stored, hashed and compared.
 */
export const MAX_KEY_CHARS = 8_192;
export const MAX_ID_CHARS = 256;
export const MAX_SECRET_CHARS = 512;
export const MAX_MODEL_CHARS = 128;
/**
 * The wrapped AES key is RSA ciphertext in base64 (344 characters for RSA-2048, 684 for 4096) and
 * the IV 24: bounding them keeps every envelope's overhead small; the ciphertext itself is bounded
 * by the body limit and the store's byte budget.
 */
export const MAX_CIPHERKEY_CHARS = 2_048;
export const MAX_IV_CHARS = 64;

/** Protocol names are short identifiers; a bound keeps the echoed field small. */
export const MAX_PROTOCOL_CHARS = 64;

/**
 * The ciphertext of a requests/responses body (`ciphertext` wins over `chat_history`, spec §6.6),
 * with `cipherkey` and `iv` present: all three non-empty strings, else 400 Invalid request data.
 */
export function ciphertextOf(body: JsonObject): string {
  const ciphertext = present(body.ciphertext) ? body.ciphertext : body.chat_history;
  if (!nonEmptyString(ciphertext) || !nonEmptyString(body.cipherkey) || !nonEmptyString(body.iv)) throw v1Errors.invalidData();
  return ciphertext;
}

/**
 * The envelope stored for requests and responses: the client key (its own 400 when missing), the
 * ciphertext fields, and request_id, protocol and version when sent, each bounded.
 */
export function envelopeOf(body: JsonObject, ciphertext: string, missingClientKey: () => Error): Envelope {
  const clientKey = routingString(body, "client_public_key", MAX_KEY_CHARS, missingClientKey);
  const { cipherkey, iv } = body as { cipherkey: string; iv: string };
  checkCipherFields(cipherkey, iv);
  const requestId = optionalString(body, "request_id", MAX_ID_CHARS);
  const protocol = optionalString(body, "protocol", MAX_PROTOCOL_CHARS);
  const keep = hasNonAscii(body) ? narrowed : (v: string) => v;
  const envelope: Envelope = { client_public_key: keep(clientKey), chat_history: keep(ciphertext), cipherkey: keep(cipherkey), iv: keep(iv) };
  if (requestId !== undefined) envelope.request_id = keep(requestId);
  if (protocol !== undefined) envelope.protocol = keep(protocol);
  if (present(body.version)) {
    if (typeof body.version !== "number" || !Number.isSafeInteger(body.version)) throw v1Errors.invalidData();
    envelope.version = body.version;
  }
  return envelope;
}

/** Checks the two small ciphertext fields of an envelope. */
export function checkCipherFields(cipherkey: string, iv: string): void {
  if (cipherkey.length > MAX_CIPHERKEY_CHARS) throw v1Errors.fieldTooLong("cipherkey", MAX_CIPHERKEY_CHARS);
  if (iv.length > MAX_IV_CHARS) throw v1Errors.fieldTooLong("iv", MAX_IV_CHARS);
}

/*
 * Encoding of the stored strings. The spec describes ciphertext, cipherkey and iv as base64
 * (relay-api-v1 §6.6 table, §9) and the keys as base64 PEM (§2), but has the relay check the
 * envelope only for presence (§6.6, marked [U]: upstream's relay.py relays any string) and treat
 * keys as opaque strings compared byte for byte (§2 [I]); the peers decode leniently (Python's
 * base64.b64decode drops characters outside the alphabet unless validate=True; upstream's chat.js
 * strips whitespace first). So the relay refuses no encoding: it carries the strings unchanged and
 * charges each at what it really costs in memory and in Valkey (storedStringBytes in
 * ./memory/state.ts), which is what keeps the byte budgets true.
 *
 * What that charge relies on: a body that holds one non-ASCII character anywhere is decoded to a
 * 16-bit string, and JSON.parse cuts 16-bit strings from it, so its ASCII fields would take 2 bytes
 * per character in JavaScriptCore while costing their length. The fields a store keeps from such a
 * body are therefore copied into 1-byte strings first (about 1 ms per MiB, and only for such
 * bodies: real peers send ASCII); then ASCII always costs its length.
 */

/** Whether any key or string inside a parsed JSON value is not ASCII (bounded by the body's shape checks). */
export function hasNonAscii(v: unknown): boolean {
  if (typeof v === "string") return !isAscii(v);
  if (typeof v !== "object" || v === null) return false;
  if (Array.isArray(v)) return v.some(hasNonAscii);
  for (const k in v) if (!isAscii(k) || hasNonAscii((v as JsonObject)[k])) return true;
  return false;
}

const asciiEncoder = new TextEncoder();
const asciiDecoder = new TextDecoder();

/** An ASCII string as a 1-byte-per-character copy (TextDecoder yields one for ASCII input); other strings unchanged. */
export const narrowed = (v: string): string => (isAscii(v) ? asciiDecoder.decode(asciiEncoder.encode(v)) : v);

/** Keys that would carry plaintext: refused on requests and responses (spec §10). */
export const PLAINTEXT_KEYS = ["messages", "prompt", "input", "content", "response", "text"] as const;

/** Python peers send None (JSON null) for an absent optional field. */
export const present = (v: unknown) => v !== undefined && v !== null;

export function nonEmptyString(v: unknown): v is string {
  return typeof v === "string" && v.length > 0;
}

/** A required routing string: non-empty, bounded; anything else is the route's own 400. */
export function routingString(body: JsonObject, field: string, max: number, missing: () => Error): string {
  const v = body[field];
  if (!nonEmptyString(v)) throw missing();
  if (v.length > max) throw v1Errors.fieldTooLong(field, max);
  return v;
}

/** An optional routing string: absent/null -> undefined; present must be a bounded non-empty string. */
export function optionalString(body: JsonObject, field: string, max: number): string | undefined {
  const v = body[field];
  if (!present(v)) return undefined;
  if (!nonEmptyString(v)) throw v1Errors.invalidData();
  if (v.length > max) throw v1Errors.fieldTooLong(field, max);
  return v;
}

/** Allowlist check of spec §6.6/§6.8: plaintext keys first, then anything unexpected. */
export function checkEnvelopeKeys(body: JsonObject, allowed: ReadonlySet<string>): void {
  const keys = Object.keys(body);
  if (keys.some((k) => (PLAINTEXT_KEYS as readonly string[]).includes(k))) throw v1Errors.plaintextFields();
  if (keys.some((k) => !allowed.has(k))) throw v1Errors.unexpectedFields();
}

const BACKEND_CLASSES = new Set(["cpu", "cuda", "metal", "vulkan", "gpu", "unknown"]);
const MAX_TOKENS = 1_000_000;
const MAX_MODEL_IDS = 64;
const MAX_CONCURRENCY = 128;

export const DEFAULT_CAPABILITIES: Capabilities = {
  api_version: "v1",
  supported_model_ids: [],
  active_context_tier: "8k-fast",
  maximum_total_context_tokens: 8192,
  default_output_token_reservation: 1024,
  maximum_output_tokens: 1024,
  max_concurrency: 1,
  backend_class: "unknown",
};

/** Python truthiness: upstream picks an alias field with `a or b`, so [] and "" fall through too. */
const pyFalsy = (v: unknown) =>
  v === undefined || v === null || v === false || v === 0 || v === "" || (Array.isArray(v) && v.length === 0) ||
  (typeof v === "object" && !Array.isArray(v) && Object.keys(v as object).length === 0);
const pyOr = (a: unknown, b: unknown) => (pyFalsy(a) ? b : a);

const isInt = (v: unknown, max: number): v is number => typeof v === "number" && Number.isInteger(v) && v >= 1 && v <= max;
const invalid = (reason: string) => v1Errors.invalidCapabilities(reason);

export function isContextTier(v: string): v is ContextTier {
  return Object.hasOwn(CONTEXT_TIERS, v);
}

/**
 * Node capabilities (spec §5.1), first failure wins. Returns the normalised object that is stored;
 * other keys are ignored. `undefined` (absent or null) means "not given".
 */
export function parseCapabilities(raw: unknown): Capabilities | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw !== "object" || Array.isArray(raw)) throw invalid("capabilities must be an object");
  const c = raw as JsonObject;
  if (present(c.api_version) && c.api_version !== "v1" && c.api_version !== 1) throw invalid("capabilities.api_version must be v1");

  const tierRaw = pyOr(c.active_context_tier, c.context_tier);
  let tier: ContextTier = DEFAULT_CAPABILITIES.active_context_tier;
  if (!pyFalsy(tierRaw)) {
    if (typeof tierRaw !== "string") throw invalid("capabilities.active_context_tier must be a string");
    const t = tierRaw.trim();
    if (!isContextTier(t)) throw invalid("capabilities.active_context_tier is unsupported");
    tier = t;
  }

  const idsRaw = pyOr(c.supported_model_ids, c.model_ids);
  let ids: string[] = [];
  if (present(c.supported_model_ids) || present(c.model_ids)) {
    const listError = () => invalid("capabilities.supported_model_ids must be a non-empty string list");
    if (!Array.isArray(idsRaw) || idsRaw.length === 0 || idsRaw.length > MAX_MODEL_IDS) throw listError();
    for (const id of idsRaw) {
      if (typeof id !== "string") throw listError();
      const t = id.trim();
      if (t.length < 1 || t.length > MAX_MODEL_CHARS) throw listError();
      const lower = t.toLowerCase();
      if (!ids.includes(lower)) ids.push(lower);
    }
  }

  let total: number = CONTEXT_TIERS[tier];
  if (present(c.maximum_total_context_tokens)) {
    if (!isInt(c.maximum_total_context_tokens, MAX_TOKENS)) throw invalid("capabilities.maximum_total_context_tokens must be a positive integer");
    total = c.maximum_total_context_tokens;
  }
  if (total < CONTEXT_TIERS[tier]) throw invalid("capabilities.maximum_total_context_tokens is below the active tier");

  const counts = invalid.bind(null, "capability token reservations and concurrency must be positive integers");
  const reservation = present(c.default_output_token_reservation) ? c.default_output_token_reservation : DEFAULT_CAPABILITIES.default_output_token_reservation;
  const maxOut = present(c.maximum_output_tokens) ? c.maximum_output_tokens : Math.max(DEFAULT_CAPABILITIES.maximum_output_tokens, typeof reservation === "number" ? reservation : 0);
  const concurrency = present(c.max_concurrency) ? c.max_concurrency : DEFAULT_CAPABILITIES.max_concurrency;
  if (!isInt(reservation, MAX_TOKENS) || !isInt(maxOut, MAX_TOKENS) || !isInt(concurrency, MAX_CONCURRENCY)) throw counts();
  if (reservation > maxOut) throw invalid("default output reservation cannot exceed maximum output tokens");

  let backend = "unknown";
  if (present(c.backend_class)) {
    if (typeof c.backend_class !== "string") throw invalid("capabilities.backend_class must be a string");
    const b = c.backend_class.trim().toLowerCase();
    backend = BACKEND_CLASSES.has(b) ? b : "unknown";
  }

  return {
    api_version: "v1",
    supported_model_ids: ids,
    active_context_tier: tier,
    maximum_total_context_tokens: total,
    default_output_token_reservation: reservation,
    maximum_output_tokens: maxOut,
    max_concurrency: concurrency,
    backend_class: backend,
  };
}

/** Model names upstream maps onto the default model (spec §6.5). */
export const DEFAULT_MODEL = "qwen3-8b-instruct";
/** A Map, not an object literal: a model named "constructor" must not resolve through the prototype. */
const MODEL_ALIASES = new Map<string, string>([
  ["llama-3.1-8b-instruct", DEFAULT_MODEL],
  ["llama-3-8b-instruct", DEFAULT_MODEL],
  ["gpt-3.5-turbo", DEFAULT_MODEL],
  ["gpt-5-chat-latest", DEFAULT_MODEL],
]);
export const resolveModel = (requested: string) => {
  const m = requested.trim().toLowerCase();
  return MODEL_ALIASES.get(m) ?? m;
};
