/**
 * A demo client speaking the token.place API v1 relay protocol like upstream `client.py`
 * (`ChatClient.send_message`): pick a node with `GET servers/next`, encrypt a request bound to its
 * own key and a fresh request id for that node, queue it with `POST requests` (with a cancel
 * token), then poll `POST responses/retrieve` until the answer arrives, decrypting any encrypted
 * progress the relay passes along on the way (as upstream `static/chat.js` does), or cancel it.
 */
import { generateKeyPair, type Envelope, type KeyPair } from "./crypto.ts";
import { openAnswer, openProgress, sealRequest } from "./envelopes.ts";
import { callJson, sleep, type Json, type WireTap } from "./http.ts";
import { ROUTES, type ApiV1Response, type ChatMessage, type Progress } from "./protocol.ts";

export interface DemoClientOptions {
  relayUrl: string;
  keys?: KeyPair;
  wireTap?: WireTap;
  /** Pause between retrieve polls (upstream `client.py` waits 2 s; the demo is impatient). Default 200 ms. */
  retrieveIntervalMs?: number;
}

/** A request the relay admitted. */
export interface Submitted {
  requestId: string;
  cancelToken: string;
  /** The sealed request exactly as it went to the relay. */
  sent: Envelope;
  /** performance.now() when `POST requests` was sent, and when the relay admitted it. */
  sentAt: number;
  admittedAt: number;
}

export type Outcome =
  | { kind: "answer"; response: ApiV1Response; polls: number; at: number }
  /** The relay ended the request (410): cancelled or expired, with its reason. */
  | { kind: "ended"; status: string; reason: string; polls: number; at: number };

export interface AwaitOptions {
  signal: AbortSignal;
  /** Each decrypted, validated progress update, in sequence order. */
  onProgress?: (progress: Progress) => void;
}

export interface DemoClient {
  readonly publicKeyB64: string;
  /** `GET servers/next` without a query, like `client.py`: the relay's choice for the default model. */
  pickNode(signal: AbortSignal): Promise<Json>;
  submit(serverKey: string, messages: ChatMessage[], signal: AbortSignal): Promise<Submitted>;
  awaitAnswer(submitted: Submitted, opts: AwaitOptions): Promise<Outcome>;
  cancel(submitted: Submitted, signal: AbortSignal): Promise<Json>;
}

const REQUEST_TIMEOUT_MS = 10_000;
const isObject = (v: unknown): v is Json => v !== null && typeof v === "object" && !Array.isArray(v);

export async function createClient(opts: DemoClientOptions): Promise<DemoClient> {
  const keys = opts.keys ?? (await generateKeyPair());
  const relayUrl = opts.relayUrl.replace(/\/+$/, "");

  async function call(method: "GET" | "POST", path: string, body: Json | undefined, signal: AbortSignal) {
    const res = await callJson(relayUrl, method, path, body, { signal, timeoutMs: REQUEST_TIMEOUT_MS });
    opts.wireTap?.({ from: "client", method, path, status: res.status, ...(body ? { request: body } : {}), response: res.json });
    return res;
  }

  return {
    publicKeyB64: keys.publicKeyB64,

    async pickNode(signal) {
      const { status, json } = await call("GET", ROUTES.next, undefined, signal);
      if (status !== 200 || typeof json.server_public_key !== "string") throw new Error(`servers/next answered ${status}: ${JSON.stringify(json)}`);
      return json;
    },

    async submit(serverKey, messages, signal) {
      const { requestId, cancelToken, body, sent } = await sealRequest(keys.publicKeyB64, serverKey, messages);
      const sentAt = performance.now();
      const { status, json } = await call("POST", ROUTES.requests, body, signal);
      if (status !== 200) throw new Error(`requests answered ${status}: ${JSON.stringify(json)}`);
      return { requestId, cancelToken, sent, sentAt, admittedAt: performance.now() };
    },

    async awaitAnswer(submitted, { signal, onProgress }) {
      const { requestId } = submitted;
      let lastSequence = 0;
      for (let polls = 1; ; polls++) {
        const { status, json } = await call("POST", ROUTES.retrieve, { client_public_key: keys.publicKeyB64, request_id: requestId }, signal);
        if (status === 200) return { kind: "answer", response: await openAnswer(keys, requestId, json), polls, at: performance.now() };
        if (status === 410) {
          const error = isObject(json.error) ? json.error : {};
          return { kind: "ended", status: String(error.status ?? error.code), reason: String(error.reason ?? ""), polls, at: performance.now() };
        }
        if (status !== 202) throw new Error(`responses/retrieve answered ${status}: ${JSON.stringify(json)}`);
        if (json.encrypted_progress !== undefined) {
          const progress = await openProgress(keys, requestId, json.encrypted_progress, lastSequence);
          if (progress) {
            lastSequence = progress.sequence;
            onProgress?.(progress);
          }
        }
        await sleep(opts.retrieveIntervalMs ?? 200, signal);
        signal.throwIfAborted();
      }
    },

    async cancel(submitted, signal) {
      const body = {
        client_public_key: keys.publicKeyB64,
        request_id: submitted.requestId,
        cancel_token: submitted.cancelToken,
        status: "cancelled",
        reason: "requester_cancelled",
      };
      const { status, json } = await call("POST", ROUTES.cancel, body, signal);
      if (status !== 200) throw new Error(`requests/cancel answered ${status}: ${JSON.stringify(json)}`);
      return json;
    },
  };
}
