import { RelayError } from "../errors.ts";
import type { JsonObject } from "../http/json.ts";
import { MAX_CIPHERKEY_CHARS, MAX_ID_CHARS, MAX_IV_CHARS, MAX_KEY_CHARS, hasNonAscii, narrowed } from "../v1/validate.ts";

/**
 * Protocol error bodies, byte for byte as token.place peers expect them
 * (token.place's legacy relay protocol). Each carries a machine-readable code for metrics and logs.
 */
export const protocolErrors = {
  invalidFaucet: () => new RelayError(400, "invalid_request", "Invalid request data", { error: { message: "Invalid request data", code: 400 } }),
  streamNeedsClientKey: () =>
    new RelayError(400, "stream_requires_client_key", "Streaming requests require a client public key", {
      error: { message: "Streaming requests require a client public key", code: 400 },
    }),
  unknownServer: () => new RelayError(404, "unknown_server", "Server with the specified public key not found", { error: "Server with the specified public key not found" }),
  unauthorized: () =>
    new RelayError(401, "unauthorized", "Missing or invalid relay server token", { error: { message: "Missing or invalid relay server token", code: 401 } }),
  invalidPublicKey: () => new RelayError(400, "invalid_public_key", "Invalid public key", { error: "Invalid public key" }),
  invalidBatchSize: () => new RelayError(400, "invalid_batch_size", "Invalid max_batch_size", { error: "Invalid max_batch_size" }),
  invalidData: () => new RelayError(400, "invalid_request", "Invalid request data", { error: "Invalid request data" }),
  unknownStream: () => new RelayError(404, "unknown_stream", "Unknown stream session", { error: "Unknown stream session" }),
};

/**
 * Relay-specific refusals (limits): the protocol's nested error shape, never a silent drop. The
 * ones that clear by themselves carry Retry-After (RFC 9110 §10.2.3, RFC 6585 §4) so a client
 * waits instead of hammering; a full stream session or a final chunk does not clear, so no hint.
 */
export const limitErrors = {
  queueFull: () => retryAfter(limit(429, "queue_full", "The job queue for this server is full; retry later"), STORAGE_FULL_RETRY_AFTER_SECONDS),
  nodesFull: () => retryAfter(limit(503, "nodes_full", "The relay has reached its limit of registered servers"), STORAGE_FULL_RETRY_AFTER_SECONDS),
  answersFull: () =>
    retryAfter(limit(503, "answers_full", "The relay has reached its limit of pending answers; retry later"), STORAGE_FULL_RETRY_AFTER_SECONDS),
  streamsFull: () =>
    retryAfter(limit(503, "stream_sessions_full", "The relay has reached its limit of open stream sessions; retry later"), STORAGE_FULL_RETRY_AFTER_SECONDS),
  chunksFull: () => limit(429, "stream_chunks_full", "This stream session has reached its chunk limit"),
  streamFinal: () => limit(409, "stream_already_final", "This stream session already received its final chunk"),
  /** A node key's queued jobs may hold 1/NODE_STORED_BYTES_DIVISOR of the legacy byte budget (src/broker/bytes.ts). */
  nodeStorageFull: () =>
    retryAfter(limit(429, "node_storage_full", "The job queue for this server holds as much data as it may; retry later"), STORAGE_FULL_RETRY_AFTER_SECONDS),
  /** The legacy protocol's share of RELAY_MEMORY_BUDGET_BYTES is taken: room comes back as payloads are collected. */
  storageFull: () =>
    retryAfter(limit(503, "storage_full", "The relay holds as much data as it may (RELAY_MEMORY_BUDGET_BYTES); retry later"), STORAGE_FULL_RETRY_AFTER_SECONDS),
};

function limit(status: number, code: string, message: string): RelayError {
  return new RelayError(status, code, message, { error: { message, code: status, type: code } });
}

/** Nodes poll every few seconds (RELAY_NEXT_PING_SECONDS), taking jobs and so freeing room. */
export const STORAGE_FULL_RETRY_AFTER_SECONDS = 5;

function retryAfter(err: RelayError, seconds: number): RelayError {
  return new RelayError(err.status, err.code, err.message, err.body, { "Retry-After": String(seconds) });
}

export const isKey = (v: unknown): v is string => typeof v === "string" && v.length > 0;
export const isText = (v: unknown): v is string => typeof v === "string";
export const isOptionalBool = (v: unknown): v is boolean | undefined => v === undefined || typeof v === "boolean";

export function hasCiphertext(body: JsonObject): body is JsonObject & { chat_history: string; cipherkey: string; iv: string } {
  return isText(body.chat_history) && isText(body.cipherkey) && isText(body.iv);
}

/** Python peers send None (JSON null) for an absent optional field: treat it as absent. */
export function withoutNulls(body: JsonObject | undefined, optional: readonly string[]): JsonObject | undefined {
  if (!body) return body;
  for (const key of optional) if (body[key] === null) delete body[key];
  return body;
}

// Field bounds, as API v1's (src/v1/validate.ts): real peers send ~600-character keys, 36-character
// session ids, a 344-character wrapped key and a 24-character IV. Without bounds a client parks
// megabytes in a key that is stored, hashed, compared and used as a notification topic.

/**
 * Largest stream chunk, as its JSON text. Today's nodes send the whole encrypted answer as one
 * final chunk: a full 64k-token conversation is ~0.4 MB of ciphertext, so 1 MiB leaves room while a
 * session's RELAY_MAX_STREAM_CHUNKS chunks cannot each be a whole body.
 */
export const MAX_STREAM_CHUNK_CHARS = 1024 * 1024;

/** The string fields each legacy route bounds, checked after the route's own validation. */
export const LEGACY_FIELD_BOUNDS = {
  faucet: { server_public_key: MAX_KEY_CHARS, client_public_key: MAX_KEY_CHARS, cipherkey: MAX_CIPHERKEY_CHARS, iv: MAX_IV_CHARS },
  sink: { server_public_key: MAX_KEY_CHARS },
  source: { client_public_key: MAX_KEY_CHARS, cipherkey: MAX_CIPHERKEY_CHARS, iv: MAX_IV_CHARS },
  retrieve: { client_public_key: MAX_KEY_CHARS },
  streamSource: { session_id: MAX_ID_CHARS },
  streamRetrieve: { client_public_key: MAX_KEY_CHARS },
} as const satisfies Record<string, Record<string, number>>;

/** 400 naming the field, in the legacy protocol's nested shape (the code is API v1's field_too_long). */
export const fieldTooLong = (field: string, max: number) => {
  const message = `${field} is longer than ${max} characters`;
  return new RelayError(400, "field_too_long", message, { error: { message, code: 400, type: "field_too_long", field, limit: max } });
};

/**
 * Throws field_too_long for the first string field longer than its bound; other types are the
 * route's business. Every route calls it before it stores anything, so it also keeps the byte
 * charge true: in a body holding any non-ASCII character (legacy bodies may carry any extra key),
 * the bounded fields and `chat_history` are replaced by 1-byte copies when ASCII, as API v1's
 * envelopeOf does (why: the encoding note in src/v1/validate.ts).
 */
export function checkFieldLengths(body: JsonObject, bounds: Readonly<Record<string, number>>): void {
  for (const field in bounds) {
    const v = body[field];
    if (typeof v === "string" && v.length > bounds[field]!) throw fieldTooLong(field, bounds[field]!);
  }
  if (!hasNonAscii(body)) return;
  for (const field of [...Object.keys(bounds), "chat_history"]) {
    const v = body[field];
    if (typeof v === "string") body[field] = narrowed(v);
  }
}

/** A stream chunk is any JSON value (nodes send an object); bounded by the length of its JSON text. */
export function checkChunkSize(chunk: unknown): void {
  // The body's depth was bounded when it was read (readJsonObject), so this cannot overflow.
  const size = JSON.stringify(chunk)?.length ?? 0;
  if (size > MAX_STREAM_CHUNK_CHARS) throw fieldTooLong("chunk", MAX_STREAM_CHUNK_CHARS);
}
