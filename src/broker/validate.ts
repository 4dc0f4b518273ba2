import { RelayError } from "../errors.ts";
import type { JsonObject } from "../http/json.ts";

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

/** Relay-specific refusals (limits): the protocol's nested error shape, never a silent drop. */
export const limitErrors = {
  queueFull: () => limit(429, "queue_full", "The job queue for this server is full; retry later"),
  nodesFull: () => limit(503, "nodes_full", "The relay has reached its limit of registered servers"),
  answersFull: () => limit(503, "answers_full", "The relay has reached its limit of pending answers; retry later"),
  streamsFull: () => limit(503, "stream_sessions_full", "The relay has reached its limit of open stream sessions; retry later"),
  chunksFull: () => limit(429, "stream_chunks_full", "This stream session has reached its chunk limit"),
  streamFinal: () => limit(409, "stream_already_final", "This stream session already received its final chunk"),
};

function limit(status: number, code: string, message: string): RelayError {
  return new RelayError(status, code, message, { error: { message, code: status, type: code } });
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
