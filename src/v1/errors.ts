import { RelayError } from "../errors.ts";
import type { TerminalStatus } from "./store.ts";

/**
 * API v1 error bodies (token.place API v1 relay spec §2, §6). Codes, statuses and field names are
 * the contract; the message texts are upstream relay.py's, kept for parity.
 */
const v1 = (status: number, code: string | number, message: string, extra: Record<string, unknown> = {}, metricCode?: string) =>
  new RelayError(status, metricCode ?? String(code), message, { error: { message, code, ...extra } });

export const v1Errors = {
  unauthorized: () => v1(401, 401, "Missing or invalid relay server token", {}, "unauthorized"),
  invalidData: () => v1(400, 400, "Invalid request data", {}, "invalid_request"),
  missingServerKey: () => v1(400, 400, "Missing server public key", {}, "missing_server_public_key"),
  missingClientKey: () => v1(400, 400, "Missing client public key", {}, "missing_client_public_key"),
  invalidPublicKey: () => v1(400, 400, "Invalid public key", {}, "invalid_public_key"),
  invalidCapabilities: (reason: string) => v1(400, "invalid_capabilities", reason),
  plaintextFields: () => v1(400, 400, "Plaintext relay payload fields are forbidden; send ciphertext envelope only", {}, "plaintext_fields"),
  unexpectedFields: () => v1(400, 400, "Unexpected relay payload fields are forbidden; send ciphertext envelope only", {}, "unexpected_fields"),
  /** A field longer than any real peer sends: refused before it is stored or compared. */
  fieldTooLong: (field: string, max: number) =>
    v1(400, "field_too_long", `${field} is longer than ${max} characters`, { field }),
  unknownServer: () => v1(404, 404, "Server with the specified public key not found", {}, "unknown_server"),
  forbiddenCredential: () => v1(403, 403, "Missing or invalid relay server control credential", {}, "invalid_control_credential"),
  forbiddenCancel: () => v1(403, 403, "Missing or invalid cancel proof", {}, "invalid_cancel_proof"),
  noLongerWaiting: (status: string) => v1(410, status, "Request is no longer waiting for a response", { status }, `response_${status}`),
  retrieveTerminal: (status: TerminalStatus, reason: string) =>
    v1(410, status, status === "cancelled" ? "Request cancelled" : "Request expired", { status, reason }, `request_${status}`),
  unknownRequest: (requestId: string) => v1(404, 404, `Unknown request_id: ${requestId}`, {}, "unknown_request"),
  noResponse: () => v1(404, 404, "No response available for the given public key", {}, "no_response"),
  invalidContextTier: () => v1(400, "invalid_context_tier", "Unsupported context_tier"),
  progressTooLarge: () => v1(413, 413, "Progress envelope too large", {}, "progress_too_large"),
  progressSchema: () => v1(400, 400, "Invalid encrypted progress schema", {}, "invalid_progress"),
  progressProtocol: () => v1(400, 400, "Invalid encrypted progress protocol", {}, "invalid_progress"),
  progressEnvelope: () => v1(400, 400, "Invalid encrypted progress envelope", {}, "invalid_progress"),
  progressNotActive: () => v1(410, 410, "Progress request is not active for this owner", {}, "progress_not_active"),
  progressExpired: () => v1(410, 410, "Progress request has expired", {}, "progress_expired"),
  // Bounds of this relay (upstream has none): each answers with its own code, nothing is dropped silently.
  queueFull: () => v1(429, "queue_full", "The request queue of this compute node is full; retry later"),
  requestsFull: () => v1(503, "requests_full", "The relay has reached its limit of live requests; retry later"),
  nodesFull: () => v1(503, "nodes_full", "The relay has reached its limit of registered compute nodes"),
  answersFull: () => v1(503, "answers_full", "The relay has reached its limit of stored answers; retry later"),
  /** With Retry-After (5 s, as the legacy protocol's): room comes back as nodes take work and clients collect answers. */
  storageFull: () => {
    const e = v1(503, "storage_full", "The relay holds as much ciphertext as it may (RELAY_V1_MAX_STORED_BYTES); retry later");
    return new RelayError(e.status, e.code, e.message, e.body, { "Retry-After": "5" });
  },
  /**
   * This client address holds its share of the byte budget (RELAY_V1_MAX_STORED_BYTES_PER_CLIENT)
   * in requests not yet answered: 429, the address's own doing like queue_full, so one flooding
   * address is refused while every other is still admitted. Room comes back as its requests are
   * answered, cancelled or expire, so the same Retry-After as storage_full.
   */
  clientStorageFull: () => {
    const e = v1(429, "client_storage_full", "This address holds its share of the relay's ciphertext (RELAY_V1_MAX_STORED_BYTES_PER_CLIENT); retry later", { scope: "client" });
    return new RelayError(e.status, e.code, e.message, e.body, { "Retry-After": "5" });
  },
  /** Rate-limit shape (spec §2) with a one-second pace: this address holds its share of retrieves. */
  holdsExceeded: () => {
    const message = "Too many held retrieves from this address (RELAY_MAX_HOLDS_PER_IP); retry in 1 second";
    return new RelayError(429, "long_poll_per_ip_client", message, { error: { message, type: "rate_limit_error", code: "rate_limit_exceeded", param: null } }, { "Retry-After": "1" });
  },
  duplicateRequest: () => v1(409, "duplicate_request_id", "This request_id is already live for this client or node; use a fresh id"),
  operatorNotConfigured: () =>
    new RelayError(503, "operator_auth_not_configured", "Operator authentication is not configured", {
      error: { message: "Operator authentication is not configured", type: "authentication_error", param: null, code: "operator_auth_not_configured" },
    }),
  operatorInvalid: () =>
    new RelayError(401, "operator_token_invalid", "Operator token missing or invalid", {
      error: { message: "Operator token missing or invalid", type: "authentication_error", param: null, code: "operator_token_invalid" },
    }),
  legacyDeprecated: (route: string) => {
    const message = `Legacy relay endpoint '${route}' is deprecated. Use API v1 relay E2EE routes.`;
    return new RelayError(410, "legacy_relay_endpoint_deprecated", message, {
      error: { message, code: "legacy_relay_endpoint_deprecated", deprecated: true },
    });
  },
  failClosed: () =>
    new RelayError(503, "distributed_api_v1_relay_disabled", "Distributed API v1 relay plaintext paths are disabled", {
      error: {
        message: "Distributed API v1 relay plaintext paths are disabled; use the API v1 E2EE relay routes",
        type: "service_unavailable_error",
        code: "distributed_api_v1_relay_disabled",
      },
    }),
};
