import type { RequestContext } from "../http/context.ts";
import { CLOSE } from "../http/body-budget.ts";
import { json, readJsonObject } from "../http/json.ts";
import type { RouteTable } from "../http/routes.ts";
import { SMALL_ROUTE_MAX_BODY_BYTES } from "../config/defaults.ts";
import { RelayError, withConnectionClose } from "../errors.ts";
import { sha256Hex } from "../common/tokens.ts";
import { fingerprint, reader, secondsLeft, type V1Deps } from "./deps.ts";
import { v1Errors } from "./errors.ts";
import { PROTOCOL, v1Topics, type ProgressUpdate, type RetrieveResult } from "./store.ts";
import { MAX_ID_CHARS, MAX_KEY_CHARS, MAX_SECRET_CHARS, checkEnvelopeKeys, ciphertextOf, envelopeOf, nonEmptyString, optionalString } from "./validate.ts";

/** Progress bodies are small by design; upstream refuses larger ones before anything else (spec §6.9). */
export const PROGRESS_MAX_BYTES = 16_384;

/** Answer routes (spec §6.8-6.10): the node posts, the client retrieves. */
export const responseRoutes = {
  responses: { method: "POST", path: "/api/v1/relay/responses", auth: "server-token", limit: "control" },
  progress: { method: "POST", path: "/api/v1/relay/progress", auth: "server-token", maxBodyBytes: PROGRESS_MAX_BYTES, tooLarge: v1Errors.progressTooLarge, limit: "control" },
  retrieve: { method: "POST", path: "/api/v1/relay/responses/retrieve", cors: true, maxBodyBytes: SMALL_ROUTE_MAX_BODY_BYTES },
} as const satisfies RouteTable;

const RESPONSE_KEYS = new Set(["client_public_key", "chat_history", "ciphertext", "cipherkey", "iv", "request_id", "protocol", "version", "cancel_token"]);
const PROGRESS_KEYS = ["server_public_key", "client_public_key", "request_id", "control_credential", "protocol", "version", "ciphertext", "cipherkey", "iv"];
const PROGRESS_LIMITS: Record<string, number> = {
  server_public_key: MAX_KEY_CHARS,
  client_public_key: MAX_KEY_CHARS,
  request_id: MAX_ID_CHARS,
  control_credential: MAX_SECRET_CHARS,
  protocol: 64,
};

export function createResponseHandlers(deps: V1Deps) {
  const { store, config } = deps;
  const read = reader(deps.maxBodyBytes);

  async function responses(req: Request, ctx: RequestContext): Promise<Response> {
    const body = await read(req);
    if (!body) throw v1Errors.invalidData();
    checkEnvelopeKeys(body, RESPONSE_KEYS);
    const envelope = envelopeOf(body, ciphertextOf(body), v1Errors.invalidData);
    const clientKey = envelope.client_public_key;
    const requestId = envelope.request_id;
    // Only a well-formed envelope may charge a client key's bucket (spec §11), never junk naming a victim.
    await deps.limits.identity("responses", clientKey, ctx);
    const result = await store.respond(envelope);
    switch (result.kind) {
      case "gone":
        throw v1Errors.noLongerWaiting(result.status);
      case "answers_full":
        throw v1Errors.answersFull();
      case "storage_full":
        throw v1Errors.storageFull();
      case "duplicate":
        return json(200, { message: "Response already queued for client" });
      case "accepted":
        wakeRetrievers(clientKey, requestId);
        if (ctx.debugEnabled !== false) ctx.log.debug({ event: "v1.response.accepted", client: fingerprint(clientKey), tracked: requestId !== undefined }, "response accepted");
        return json(200, { message: "Response received and queued for client" });
    }
  }

  /** A retrieve may wait on its request id, or on the client key alone (oldest answer). */
  function wakeRetrievers(clientKey: string, requestId: string | undefined) {
    // A retrieve without request_id only ever takes answers that had none (spec §3.4 hardening).
    deps.notifier.notify(v1Topics.request(clientKey, requestId), { published: store.publishesWakes });
  }

  async function progress(req: Request, ctx: RequestContext): Promise<Response> {
    let body;
    try {
      body = await readJsonObject(req, PROGRESS_MAX_BYTES);
    } catch (err) {
      if (err instanceof RelayError && err.status === 413) throw v1Errors.progressTooLarge();
      throw err;
    }
    if (!body) throw v1Errors.progressSchema();
    const keys = Object.keys(body);
    if (keys.length !== PROGRESS_KEYS.length || !PROGRESS_KEYS.every((k) => Object.hasOwn(body, k))) throw v1Errors.progressSchema();
    if (body.protocol !== PROTOCOL || body.version !== 1) throw v1Errors.progressProtocol();
    for (const k of PROGRESS_KEYS) {
      if (k === "version") continue;
      const v = body[k];
      if (!nonEmptyString(v) || v.length > (PROGRESS_LIMITS[k] ?? PROGRESS_MAX_BYTES)) throw v1Errors.progressEnvelope();
    }
    const f = body as Record<string, string>;
    const update: ProgressUpdate = {
      client_public_key: f.client_public_key!,
      request_id: f.request_id!,
      protocol: PROTOCOL,
      version: 1,
      ciphertext: f.ciphertext!,
      cipherkey: f.cipherkey!,
      iv: f.iv!,
    };
    const verified = await deps.limits.owner("progress", f.server_public_key!, ctx);
    const result = await store.progress(f.server_public_key!, sha256Hex(f.control_credential!), update);
    if (result !== "forbidden") await verified();
    switch (result) {
      case "forbidden":
        throw v1Errors.forbiddenCredential();
      case "not_active":
        throw v1Errors.progressNotActive();
      case "expired":
        throw v1Errors.progressExpired();
      case "storage_full":
        throw v1Errors.storageFull();
      case "accepted":
        deps.notifier.notify(v1Topics.request(update.client_public_key, update.request_id));
        return json(202, { message: "Encrypted progress accepted" });
    }
  }

  async function retrieve(req: Request, ctx: RequestContext): Promise<Response> {
    const body = await read(req);
    if (!body || !nonEmptyString(body.client_public_key)) throw v1Errors.invalidData();
    // Named like every other over-long routing field (real keys are ~600 characters).
    if (body.client_public_key.length > MAX_KEY_CHARS) throw v1Errors.fieldTooLong("client_public_key", MAX_KEY_CHARS);
    const clientKey = body.client_public_key;
    const requestId = optionalString(body, "request_id", MAX_ID_CHARS);
    let pending: Extract<RetrieveResult, { kind: "pending" }> | undefined;
    // Held until the answer, a progress update or the end (cancel/expiry) arrives, or until just
    // before client.py's 10 s timeout (spec §4): it would otherwise sleep 2 s between polls.
    const look = async () => {
      const r = await store.retrieve(clientKey, requestId);
      if (r.kind === "pending" && !r.progress) {
        pending = r;
        return undefined;
      }
      return r;
    };
    let { value, outcome } = await deps.clientLongPoll.hold<RetrieveResult>(
      req,
      ctx,
      v1Topics.request(clientKey, requestId),
      look,
      requestId === undefined ? 0 : config.retrieveHoldMs,
    );
    // Past its share of held retrieves, or past the whole hold budget, a retrieve is paced
    // (src/common/pacing.ts): a second later, one more look hands over what arrived meanwhile, else
    // 429 with Retry-After (share) or the usual pending (budget). Answered at once, a crowd re-polls
    // in a tight loop; past the address's share of paces the answer comes at once and closes.
    let close = false;
    if (!value && (outcome === "ip_limit" || outcome === "overflow") && deps.pacer) {
      if (await deps.pacer.pace(req, ctx)) {
        if (!req.signal.aborted) value = await look();
      } else if (outcome === "ip_limit") throw withConnectionClose(v1Errors.holdsExceeded()); // past the address's share of paces too
      else close = true;
    }
    if (!value && outcome === "ip_limit") throw v1Errors.holdsExceeded();
    let result = value ?? pending;
    // Nothing for the client, answered without a hold (an unknown or ended request, no request_id):
    // past the address's allowance per second these are paced too, else a crowd polling ids it
    // never got admitted loops on 404s as fast as the relay answers.
    // Only answers given at once count: a retrieve that was held (timeout, woken) already waited
    // its hold, and pacing it again would push a real client past its own HTTP timeout.
    if (deps.pacer && !close && (outcome === "immediate" || outcome === "disabled") && (result === undefined || result.kind !== "answer") && deps.pacer.overAllowance(ctx)) {
      if (!(await deps.pacer.pace(req, ctx))) close = true;
      else if (!req.signal.aborted) result = (await look()) ?? pending;
    }
    // Past the address's share of paces: answered now, and the connection closed.
    const headers = close ? CLOSE : undefined;
    const refuse = (e: RelayError) => (close ? withConnectionClose(e) : e);
    if (!result) return json(202, { status: "pending" }, headers);
    switch (result.kind) {
      case "answer": {
        if (req.signal.aborted) {
          // The client left while its answer was taken: store it again for its next poll.
          await store.unretrieve(result.envelope);
          return json(499, { error: { message: "Client closed the request", code: 499 } });
        }
        if (ctx.debugEnabled !== false) ctx.log.debug({ event: "v1.response.delivered", client: fingerprint(clientKey) }, "response delivered");
        const envelope = result.envelope;
        // A large answer the connection does not take whole goes back to the store, as above.
        return deps.deliver(envelope, req, ctx, () => {
          ctx.log.info({ event: "v1.response.undelivered", client: fingerprint(clientKey) }, "client left before its answer was written; kept for its next retrieve");
          store.unretrieve(envelope).catch((err: unknown) => ctx.log.warn({ err }, "could not keep an undelivered answer"));
        });
      }
      case "terminal":
        throw refuse(v1Errors.retrieveTerminal(result.status, result.reason));
      case "unknown":
        throw refuse(requestId === undefined ? v1Errors.noResponse() : v1Errors.unknownRequest(requestId));
      case "pending": {
        const left = secondsLeft(result.remainingMs);
        const out: Record<string, unknown> = { status: "pending", request_deadline_remaining_seconds: left, request_ttl_seconds: left };
        if (result.progress) out.encrypted_progress = result.progress;
        return json(202, out, headers);
      }
    }
  }

  return { responses, progress, retrieve };
}
