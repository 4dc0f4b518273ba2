import { newCredential, sha256Hex } from "../common/tokens.ts";
import { SMALL_ROUTE_MAX_BODY_BYTES } from "../config/defaults.ts";
import { RelayError } from "../errors.ts";
import type { RequestContext } from "../http/context.ts";
import { json, type JsonObject } from "../http/json.ts";
import type { RouteTable } from "../http/routes.ts";
import { reader, fingerprint, secondsLeft, type V1Deps } from "./deps.ts";
import { v1Errors } from "./errors.ts";
import { v1Topics, type ClaimResult, type Envelope } from "./store.ts";
import { DEFAULT_CAPABILITIES, MAX_ID_CHARS, MAX_KEY_CHARS, MAX_SECRET_CHARS, nonEmptyString, parseCapabilities, routingString } from "./validate.ts";

/** Compute-node routes (spec §6.1-6.4): registration token on every one; small bodies only (D.SMALL_ROUTE_MAX_BODY_BYTES). */
export const nodeRoutes = {
  register: { method: "POST", path: "/api/v1/relay/servers/register", auth: "server-token", limit: "control", maxBodyBytes: SMALL_ROUTE_MAX_BODY_BYTES },
  poll: { method: "POST", path: "/api/v1/relay/servers/poll", auth: "server-token", limit: "control", maxBodyBytes: SMALL_ROUTE_MAX_BODY_BYTES },
  control: { method: "POST", path: "/api/v1/relay/servers/control", auth: "server-token", limit: "control", maxBodyBytes: SMALL_ROUTE_MAX_BODY_BYTES },
  unregister: { method: "POST", path: "/api/v1/relay/servers/unregister", auth: "server-token", limit: "control", maxBodyBytes: SMALL_ROUTE_MAX_BODY_BYTES },
  /** Always served, also with legacy routes off (spec §12); legacy flat 400 bodies. */
  unregisterAlias: { method: "POST", path: "/unregister", auth: "server-token", limit: "control", maxBodyBytes: SMALL_ROUTE_MAX_BODY_BYTES },
} as const satisfies RouteTable;

/** While draining, polls answer at once and nodes come back in a second (to another pod). */
export const DRAIN_NEXT_PING_SECONDS = 1;
/** Upper bound of control's next_poll_seconds (spec §6.3). */
const CONTROL_POLL_CEILING_SECONDS = 10;

export function createNodeHandlers(deps: V1Deps) {
  const { store, config } = deps;
  const read = reader(deps.maxBodyBytes);
  const credentialDigest = (body: JsonObject) => {
    const c = body.control_credential;
    return typeof c === "string" && c.length > 0 && c.length <= MAX_SECRET_CHARS ? sha256Hex(c) : undefined;
  };

  async function register(req: Request, ctx: RequestContext): Promise<Response> {
    const body = await read(req);
    if (!body) throw v1Errors.invalidData();
    const key = routingString(body, "server_public_key", MAX_KEY_CHARS, v1Errors.missingServerKey);
    const capabilities = parseCapabilities(body.capabilities) ?? DEFAULT_CAPABILITIES;
    await deps.limits.identity("register", key, ctx);
    const credential = newCredential();
    const result = await store.register(key, capabilities, sha256Hex(credential));
    if (result.kind === "nodes_full") throw v1Errors.nodesFull();
    if (result.credentialIssued) ctx.log.info({ event: "v1.node.registered", node: fingerprint(key), tier: capabilities.active_context_tier }, "node registered");
    const out: Record<string, unknown> = {
      next_ping_in_x_seconds: config.leaseSeconds,
      poll_wait_seconds: config.pollWaitSeconds,
      // Only because progress is implemented (spec §5.2: the node then publishes it).
      relay_capabilities: { encrypted_progress_v1: true },
    };
    if (result.credentialIssued) out.control_credential = credential;
    return json(200, out);
  }

  async function poll(req: Request, ctx: RequestContext): Promise<Response> {
    const body = await read(req);
    if (!body) throw v1Errors.invalidData();
    const key = routingString(body, "server_public_key", MAX_KEY_CHARS, v1Errors.missingServerKey);
    let capabilities = parseCapabilities(body.capabilities);
    await deps.limits.identity("poll", key, ctx);
    const holdMs = config.pollWaitSeconds * 1000;
    // Held until the hold ends: a node waiting here is never stale (spec §7.1).
    const holdEnd = performance.now() + holdMs;
    const { value, outcome } = await deps.longPoll.hold<Exclude<ClaimResult, { kind: "empty" }>>(
      req,
      ctx,
      v1Topics.node(key),
      async () => {
        const r = await store.claim(key, capabilities, Math.max(0, holdEnd - performance.now()));
        capabilities = undefined;
        return r.kind === "empty" ? undefined : r;
      },
      holdMs,
    );
    // Unknown or evicted (also while held, by unregister): the node re-registers at once (spec §6.2).
    if (value?.kind === "unknown_node") throw v1Errors.unknownServer();
    if (value) {
      // The poller left while the item was being claimed: put it back, never into a closed socket.
      if (req.signal.aborted) {
        await store.release(key, value.envelope);
        deps.notifier.notify(v1Topics.node(key));
        return json(499, { error: { message: "Client closed the request", code: 499 } });
      }
      if (ctx.debugEnabled !== false) ctx.log.debug({ event: "v1.request.claimed", node: fingerprint(key) }, "request claimed");
      return json(200, workItem(value.envelope, value.remainingMs));
    }
    const nextPing =
      outcome === "draining" ? DRAIN_NEXT_PING_SECONDS
      : outcome === "timeout" || outcome === "woken" ? 0
      // Not held (holds off, or every hold slot taken): come back well inside the lease, never in a
      // tight loop. Upstream sends the lease itself, so its node arrives just as the lease lapses
      // and is evicted with its queue. The node adopts a positive value as its lease (spec §6.2).
      : Math.max(1, Math.floor(config.leaseSeconds / 2));
    return json(200, { message: "No requests available", next_ping_in_x_seconds: nextPing, poll_wait_seconds: config.pollWaitSeconds });
  }

  async function control(req: Request, ctx: RequestContext): Promise<Response> {
    const body = await read(req);
    if (!body || !nonEmptyString(body.server_public_key) || !nonEmptyString(body.request_id)) throw v1Errors.invalidData();
    if (body.server_public_key.length > MAX_KEY_CHARS || body.request_id.length > MAX_ID_CHARS) throw v1Errors.invalidData();
    const acknowledge = body.acknowledge === true || body.ack === true;
    const verified = await deps.limits.owner("control", body.server_public_key, ctx);
    const result = await store.control(body.server_public_key, body.request_id, credentialDigest(body), acknowledge);
    if (result.kind !== "forbidden") await verified();
    const idlePoll = Math.max(1, Math.min(config.pollWaitSeconds, CONTROL_POLL_CEILING_SECONDS));
    switch (result.kind) {
      case "forbidden":
        throw v1Errors.forbiddenCredential();
      case "active": {
        deps.metrics.control("active");
        deps.metrics.leaseRenewed();
        const left = secondsLeft(result.remainingMs);
        const nextPoll = Math.max(1, Math.min(config.pollWaitSeconds, CONTROL_POLL_CEILING_SECONDS, Math.max(config.inFlightTtlSeconds / 2, 1)));
        return json(200, { status: "active", next_poll_seconds: nextPoll, request_deadline_remaining_seconds: left, request_ttl_seconds: left });
      }
      case "tombstone": {
        deps.metrics.control(acknowledge ? "acknowledged" : result.status);
        const left = secondsLeft(result.remainingMs);
        return json(200, { status: result.status, next_poll_seconds: idlePoll, request_deadline_remaining_seconds: left, request_ttl_seconds: left });
      }
      case "completed_unavailable":
        deps.metrics.control("completed_unavailable");
        return json(200, { status: "completed/unavailable", next_poll_seconds: idlePoll });
    }
  }

  const unregisterWith = (flat: boolean) =>
    async function unregister(req: Request, ctx: RequestContext): Promise<Response> {
      const body = await read(req);
      if (!body) throw flat ? legacyFlat(400, "invalid_request", "Invalid request data") : v1Errors.invalidData();
      const key = body.server_public_key;
      if (typeof key !== "string" || key.trim() === "" || key.length > MAX_KEY_CHARS) {
        throw flat ? legacyFlat(400, "invalid_public_key", "Invalid public key") : v1Errors.invalidPublicKey();
      }
      const verified = await deps.limits.owner("unregister", key, ctx);
      const result = await store.unregister(key, { credentialDigest: credentialDigest(body) });
      if (result === "forbidden") throw v1Errors.forbiddenCredential();
      if (result === "removed") await verified();
      if (result === "removed") {
        // A poll held for this node answers 404 now instead of at the end of its hold.
        deps.notifier.notify(v1Topics.node(key));
        ctx.log.info({ event: "v1.node.unregistered", node: fingerprint(key) }, "node unregistered");
      }
      return json(200, { message: "Server unregistered", removed: result === "removed" });
    };

  return { register, poll, control, unregister: unregisterWith(false), unregisterAlias: unregisterWith(true) };
}

const legacyFlat = (status: number, code: string, message: string) => new RelayError(status, code, message, { error: message });

/** The work item of spec §6.2: the client's envelope unchanged plus deadline metadata. */
function workItem(envelope: Envelope, remainingMs: number | undefined): Record<string, unknown> {
  const item: Record<string, unknown> = { ...envelope };
  if (remainingMs !== undefined) {
    const left = secondsLeft(remainingMs);
    item.request_deadline_remaining_seconds = left;
    item.request_ttl_seconds = left;
  }
  // The unmodified node sleeps this long after the job; 0 brings it straight back (spec §6.2, §13.14).
  item.next_ping_in_x_seconds = 0;
  return item;
}
