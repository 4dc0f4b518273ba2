import { createTokenCheck } from "../common/tokens.ts";
import { bearerCredentials } from "../ops/operator-auth.ts";
import { SMALL_ROUTE_MAX_BODY_BYTES } from "../config/defaults.ts";
import type { RequestContext } from "../http/context.ts";
import { json } from "../http/json.ts";
import type { RouteTable } from "../http/routes.ts";
import { fingerprint, reader, type V1Deps } from "./deps.ts";
import { v1Errors } from "./errors.ts";
import { v1Topics } from "./store.ts";
import { MAX_KEY_CHARS } from "./validate.ts";

/** Operator and fail-closed routes (spec §6.11). */
export const operatorRoutes = {
  meta: { method: "GET", path: "/api/v1/meta", cache: "no-store" },
  version: { method: "GET", path: "/api/v1/version", cache: "no-store" },
  // Private: the metrics token when one is set (same rule as /metrics, spec §6.11).
  diagnostics: { method: "GET", path: "/relay/diagnostics", cache: "no-store", auth: "metrics-token" },
  // Its body names one node key: small, so a large one is refused before it is read.
  operatorUnregister: { method: "POST", path: "/api/v1/relay/unregister", cache: "no-store", maxBodyBytes: SMALL_ROUTE_MAX_BODY_BYTES },
  // Upstream's plaintext relay paths stay closed: this relay never decrypts (spec §10).
  failClosedChat: { method: "POST", path: "/relay/api/v1/chat/completions" },
  failClosedSource: { method: "POST", path: "/relay/api/v1/source" },
} as const satisfies RouteTable;

export const OPERATOR_TOKEN_HEADER = "X-Token-Place-Operator";

export function createOperatorHandlers(deps: V1Deps & { relayFacts: Record<string, unknown> }) {
  const { store, config } = deps;
  const read = reader(deps.maxBodyBytes);
  const operatorOk = createTokenCheck(config.operatorTokens);

  function meta(): Response {
    const { environment, version, revision } = deps.release;
    return json(200, { environment, version, label: `${environment} ${version}`, ref: revision });
  }

  async function diagnostics(): Promise<Response> {
    const nodes = await store.diagnostics();
    // Full keys are listed as upstream does: they are public keys, and this route is for operators.
    const entries = nodes.map((n) => ({
      server_public_key: n.key,
      age_seconds: Math.round(n.ageSeconds * 1000) / 1000,
      next_ping_in_x_seconds: n.leaseSeconds,
      queue_depth: n.queueDepth,
      in_flight_count: n.inFlight,
      max_concurrency: n.capabilities.max_concurrency,
      load_score: (n.queueDepth + n.inFlight) / n.capabilities.max_concurrency,
      capabilities: n.capabilities,
    }));
    return json(200, {
      ...deps.relayFacts,
      registered_compute_nodes: entries,
      total_registered_compute_nodes: entries.length,
      api_v1_registered_compute_nodes: entries,
      total_api_v1_registered_compute_nodes: entries.length,
    });
  }

  async function operatorUnregister(req: Request, ctx: RequestContext): Promise<Response> {
    if (config.operatorTokens.length === 0) throw v1Errors.operatorNotConfigured();
    // The auth-scheme name is case-insensitive (RFC 7235 §2.1): `bearer <token>` is a Bearer token.
    const presented = req.headers.get(OPERATOR_TOKEN_HEADER) ?? bearerCredentials(req.headers.get("authorization"));
    // Wrong tokens are counted per address like registration tokens (RELAY_AUTH_FAILURE_LIMIT, a
    // key of their own): past the limit the address gets 429 before any comparison, so the token
    // that can remove every node cannot be guessed at full speed.
    const attempt = await deps.limits.authAttempt(req, ctx, "operator-token");
    // Nothing awaited between this, the comparison and failed()'s local count (AuthAttempt.spent).
    const spent = attempt.spent();
    if (spent) await spent;
    if (!operatorOk(presented)) {
      await attempt.failed();
      throw v1Errors.operatorInvalid();
    }
    const body = await read(req);
    if (!body) throw v1Errors.invalidData();
    const key = body.server_public_key;
    if (typeof key !== "string" || key.trim() === "" || key.length > MAX_KEY_CHARS) throw v1Errors.invalidPublicKey();
    const removed = (await store.unregister(key.trim(), "operator")) === "removed";
    if (removed) {
      deps.notifier.notify(v1Topics.node(key.trim()));
      ctx.log.warn({ event: "v1.node.operator_unregistered", node: fingerprint(key) }, "node unregistered by operator");
    }
    return json(200, { message: "Server unregistered", removed });
  }

  const failClosed = (): Response => {
    throw v1Errors.failClosed();
  };

  return { meta, version: meta, diagnostics, operatorUnregister, failClosedChat: failClosed, failClosedSource: failClosed };
}
