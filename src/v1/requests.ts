import { sha256Hex } from "../common/tokens.ts";
import { SMALL_ROUTE_MAX_BODY_BYTES } from "../config/defaults.ts";
import { RelayError } from "../errors.ts";
import type { RequestContext } from "../http/context.ts";
import { json } from "../http/json.ts";
import { requestUrl } from "../http/request-url.ts";
import type { RouteTable } from "../http/routes.ts";
import { fingerprint, reader, type V1Deps } from "./deps.ts";
import { v1Errors } from "./errors.ts";
import { CONTEXT_TIERS, v1Topics, type ContextTier, type NodeLoad, type TerminalStatus } from "./store.ts";
import {
  DEFAULT_MODEL, MAX_ID_CHARS, MAX_KEY_CHARS, MAX_MODEL_CHARS, MAX_SECRET_CHARS, checkEnvelopeKeys, ciphertextOf, envelopeOf, isContextTier, nonEmptyString,
  optionalString, resolveModel, routingString,
} from "./validate.ts";

/** Client routes (spec §6.5-6.7): anonymous, browser-callable. */
export const requestRoutes = {
  next: { method: "GET", path: "/api/v1/relay/servers/next", cors: true },
  requests: { method: "POST", path: "/api/v1/relay/requests", cors: true, limit: "public" },
  cancel: { method: "POST", path: "/api/v1/relay/requests/cancel", cors: true, limit: "public", maxBodyBytes: SMALL_ROUTE_MAX_BODY_BYTES },
} as const satisfies RouteTable;

export const SELECTION_POLICY = "best_fit_smallest_capable_least_loaded_v1";
const DEFAULT_TIER: ContextTier = "8k-fast";
const REQUEST_KEYS = new Set([
  "server_public_key", "client_public_key", "chat_history", "ciphertext", "cipherkey", "iv", "request_id", "protocol", "version", "cancel_token",
]);
const CANCEL_REASONS = new Set([
  "cancelled", "client_timeout", "expired", "requester_cancelled", "requester_gave_up", "provider_timeout", "pending_request_ttl_exceeded", "server_unregistered",
]);

const tierCounts = (nodes: NodeLoad[]) => {
  const counts: Record<string, number> = {};
  for (const n of nodes) counts[n.capabilities.active_context_tier] = (counts[n.capabilities.active_context_tier] ?? 0) + 1;
  return counts;
};
const loadScore = (n: NodeLoad) => (n.queueDepth + n.inFlight) / n.capabilities.max_concurrency;

export function createRequestHandlers(deps: V1Deps) {
  const { store, config } = deps;
  const read = reader(deps.maxBodyBytes);

  async function next(req: Request): Promise<Response> {
    const query = requestUrl(req.url).searchParams;
    const requestedModel = query.get("model")?.trim() || DEFAULT_MODEL;
    if (requestedModel.length > MAX_MODEL_CHARS) throw v1Errors.fieldTooLong("model", MAX_MODEL_CHARS);
    const tierParam = query.get("context_tier")?.trim() || DEFAULT_TIER;
    if (!isContextTier(tierParam)) {
      // An empty registry answers first, as upstream does (spec §6.5 order of checks).
      if ((await store.stats()).nodes === 0) throw noNodes();
      throw v1Errors.invalidContextTier();
    }
    const model = resolveModel(requestedModel);
    const result = await store.select({ model, tier: tierParam, maxQueueDepth: config.maxQueueDepthPerNode });
    const base = { selection_policy: SELECTION_POLICY, requested_context_tier: tierParam, requested_model: requestedModel };
    switch (result.kind) {
      case "no_registered_compute_nodes":
        throw noNodes();
      case "no_matching_compute_node":
        throw unavailable("no_matching_compute_node", "No compute node serves the requested model and context tier.", {
          ...base, eligible_node_count: 0, eligible_tier_counts: {},
        });
      case "no_available_capacity":
        throw unavailable("no_available_capacity", "Every matching compute node is at capacity; retry shortly.", {
          ...base, eligible_node_count: 0, eligible_tier_counts: {},
          capacity_limited_node_count: result.capacityLimited.length, capacity_limited_tier_counts: tierCounts(result.capacityLimited),
        });
      case "selected": {
        const n = result.node;
        const tier = n.capabilities.active_context_tier;
        const out: Record<string, unknown> = {
          server_public_key: n.key,
          requested_context_tier: tierParam,
          requested_model: requestedModel,
          resolved_model: model,
          selected_context_tier: tier,
          selected_context_window_tokens: CONTEXT_TIERS[tier],
          selected_model_support: n.capabilities.supported_model_ids,
          selection_policy: SELECTION_POLICY,
          eligible_node_count: result.eligible.length,
          eligible_tier_counts: tierCounts(result.eligible),
          selected_queue_depth: n.queueDepth,
          selected_in_flight_count: n.inFlight,
          selected_load_score: loadScore(n),
          spillover: CONTEXT_TIERS[tier] > CONTEXT_TIERS[tierParam],
        };
        if (out.spillover) out.spillover_reason = "no_smaller_eligible_node_available";
        return json(200, out);
      }
    }
  }

  async function requests(req: Request, ctx: RequestContext): Promise<Response> {
    const body = await read(req);
    if (!body) throw v1Errors.invalidData();
    checkEnvelopeKeys(body, REQUEST_KEYS);
    const ciphertext = ciphertextOf(body);
    const serverKey = routingString(body, "server_public_key", MAX_KEY_CHARS, v1Errors.invalidData);
    const envelope = envelopeOf(body, ciphertext, v1Errors.missingClientKey);
    const clientKey = envelope.client_public_key;
    const requestId = envelope.request_id;
    const cancelToken = optionalString(body, "cancel_token", MAX_SECRET_CHARS);
    // Only the digest of the cancel proof is kept (compared like a credential, spec §3.3).
    const result = await store.enqueue(serverKey, envelope, cancelToken === undefined ? undefined : sha256Hex(cancelToken), config.requestDeadlineSeconds * 1000, config.maxQueueDepthPerNode, ctx.clientId);
    switch (result) {
      case "unknown_node":
        throw v1Errors.unknownServer();
      case "queue_full":
        throw v1Errors.queueFull();
      case "requests_full":
        throw v1Errors.requestsFull();
      case "storage_full":
        throw v1Errors.storageFull();
      case "client_storage_full":
        throw v1Errors.clientStorageFull();
      case "duplicate":
        throw v1Errors.duplicateRequest();
      case "queued":
        break;
    }
    deps.notifier.notify(v1Topics.node(serverKey), { published: store.publishesWakes });
    if (ctx.debugEnabled !== false) ctx.log.debug({ event: "v1.request.admitted", node: fingerprint(serverKey), client: fingerprint(clientKey), tracked: requestId !== undefined }, "request admitted");
    return json(200, {
      message: "Request received",
      request_deadline_remaining_seconds: config.requestDeadlineSeconds,
      request_ttl_seconds: config.requestDeadlineSeconds,
    });
  }

  async function cancel(req: Request, ctx: RequestContext): Promise<Response> {
    const body = await read(req);
    if (!body || !nonEmptyString(body.client_public_key) || !nonEmptyString(body.request_id)) throw v1Errors.invalidData();
    if (body.client_public_key.length > MAX_KEY_CHARS) throw v1Errors.fieldTooLong("client_public_key", MAX_KEY_CHARS);
    if (body.request_id.length > MAX_ID_CHARS) throw v1Errors.fieldTooLong("request_id", MAX_ID_CHARS);
    const proof = body.cancel_token;
    if (!nonEmptyString(proof) || proof.length > MAX_SECRET_CHARS) throw v1Errors.forbiddenCancel();
    const status: TerminalStatus = body.status === "expired" ? "expired" : "cancelled";
    const reason = typeof body.reason === "string" && CANCEL_REASONS.has(body.reason) ? body.reason : status;
    const result = await store.cancel(body.client_public_key, body.request_id, sha256Hex(proof), status, reason);
    if (result.kind === "forbidden") throw v1Errors.forbiddenCancel();
    // A retrieve held for this request answers 410 now; a node held on control learns it on its next call.
    deps.notifier.notify(v1Topics.request(body.client_public_key, body.request_id));
    ctx.log.info({ event: "v1.request.cancelled", client: fingerprint(body.client_public_key), status, reason }, "request cancelled");
    return json(200, { status, request_id: body.request_id, removed_from_queue: result.removedFromQueue });
  }

  return { next, requests, cancel };
}

const noNodes = () => unavailable("no_registered_compute_nodes", "No registered compute nodes are available on this relay.", {});
const unavailable = (code: string, message: string, extra: Record<string, unknown>) =>
  new RelayError(503, code, message, { error: { message, code, ...extra } });
