/**
 * The encrypted bodies of the token.place API v1 relay protocol, built and opened the way upstream's
 * peers do (`client.py` `send_message` / `retrieve_response`, `relay_client.py`
 * `process_client_request_result` / `_post_api_v1_response` / `_ApiV1ProgressPublisher`), with no
 * HTTP: the demo client and node send these bodies, and the interop test hands them to upstream's
 * Python code and back.
 */
import { openJson, sealJson, type Envelope, type KeyPair } from "./crypto.ts";
import type { Json } from "./http.ts";
import {
  isProgressPlaintext,
  isRequestPlaintext,
  isResponsePlaintext,
  MODEL_ID,
  PROTOCOL,
  VERSION,
  type ApiV1Request,
  type ApiV1Response,
  type ChatMessage,
  type Progress,
  type ProgressCounters,
  type ProgressPlaintext,
  type RequestPlaintext,
  type ResponsePlaintext,
} from "./protocol.ts";

const isObject = (v: unknown): v is Json => v !== null && typeof v === "object" && !Array.isArray(v);
const strings = (...v: unknown[]): boolean => v.every((x) => typeof x === "string");

export interface SealedRequest {
  requestId: string;
  /** The cancel proof: only this client knows it; the relay keeps it to check a cancel (spec §3.3). */
  cancelToken: string;
  /** The `POST requests` body (spec §6.6). */
  body: Json;
  /** The sealed request as it went out. */
  sent: Envelope;
}

/** A request for `serverKey`, bound to the client's key and a fresh id, wrapped with RSA-OAEP like `client.py`. */
export async function sealRequest(clientKey: string, serverKey: string, messages: ChatMessage[]): Promise<SealedRequest> {
  // Unguessable, like client.py's uuid4 hex: anyone who knows a pair can read its status (spec §3.4).
  const requestId = `chat-client-${crypto.randomUUID().replaceAll("-", "")}`;
  const cancelToken = crypto.randomUUID().replaceAll("-", "");
  // Inner and outer ids and keys match: the node answers to the inner ones (spec §9).
  const plaintext: RequestPlaintext = {
    protocol: PROTOCOL,
    version: VERSION,
    request_id: requestId,
    client_public_key: clientKey,
    api_v1_request: { model: MODEL_ID, messages, options: {} },
  };
  const sent = await sealJson(serverKey, plaintext, "oaep");
  const body = {
    client_public_key: clientKey,
    server_public_key: serverKey,
    chat_history: sent.ciphertext,
    cipherkey: sent.cipherkey,
    iv: sent.iv,
    protocol: PROTOCOL,
    version: VERSION,
    request_id: requestId,
    cancel_token: cancelToken,
  };
  return { requestId, cancelToken, body, sent };
}

export interface OpenedWork {
  /** Where the answer goes: the relay's `client_public_key`, equal to the one inside. */
  clientKey: string;
  /** The id inside the ciphertext, the one the node answers to. */
  requestId: string;
  request: ApiV1Request;
  /** The ciphertext as the relay handed it over. */
  ciphertext: string;
}

/** Opens a `servers/poll` work item (spec §6.2); throws saying why it cannot be served. */
export async function openWorkItem(nodeKeys: KeyPair, item: Json): Promise<OpenedWork> {
  const clientKey = typeof item.client_public_key === "string" ? item.client_public_key.trim() : "";
  const ciphertext = item.chat_history ?? item.ciphertext;
  if (!clientKey || !strings(ciphertext, item.cipherkey, item.iv)) throw new Error("work item lacks client_public_key, ciphertext, cipherkey or iv");
  let plaintext: unknown;
  try {
    plaintext = await openJson(nodeKeys, { ciphertext: ciphertext as string, cipherkey: item.cipherkey as string, iv: item.iv as string });
  } catch {
    throw new Error("could not decrypt the work item");
  }
  if (!isRequestPlaintext(plaintext, clientKey)) throw new Error("work item is not an API v1 request bound to its client key");
  return { clientKey, requestId: plaintext.request_id, request: plaintext.api_v1_request, ciphertext: ciphertext as string };
}

/** The seven-key `POST responses` body (spec §6.8), wrapped with PKCS#1 v1.5 like the real node toward clients. */
export async function sealAnswer(clientKey: string, requestId: string, response: ApiV1Response): Promise<Json> {
  const plaintext: ResponsePlaintext = { protocol: PROTOCOL, version: VERSION, request_id: requestId, client_public_key: clientKey, api_v1_response: response };
  const sealed = await sealJson(clientKey, plaintext, "pkcs1v15");
  return { client_public_key: clientKey, request_id: requestId, protocol: PROTOCOL, version: VERSION, chat_history: sealed.ciphertext, cipherkey: sealed.cipherkey, iv: sealed.iv };
}

/** The nine-key `POST progress` body (spec §6.9); only the client can read the counters. */
export async function sealProgress(nodeKey: string, credential: string, clientKey: string, requestId: string, sequence: number, counters: ProgressCounters): Promise<Json> {
  const plaintext: ProgressPlaintext = {
    protocol: PROTOCOL,
    version: VERSION,
    request_id: requestId,
    client_public_key: clientKey,
    api_v1_progress: { schema_version: 1, sequence, ...counters },
  };
  const sealed = await sealJson(clientKey, plaintext, "pkcs1v15");
  return { server_public_key: nodeKey, client_public_key: clientKey, request_id: requestId, control_credential: credential, protocol: PROTOCOL, version: VERSION, ...sealed };
}

/** Opens a `responses/retrieve` 200 body (spec §6.10); throws unless it is the answer to this request for this key. */
export async function openAnswer(clientKeys: KeyPair, requestId: string, retrieved: Json): Promise<ApiV1Response> {
  const { chat_history: ciphertext, cipherkey, iv } = retrieved;
  if (!strings(ciphertext, cipherkey, iv)) throw new Error("answer envelope lacks chat_history, cipherkey or iv");
  const plaintext = await openJson(clientKeys, { ciphertext: ciphertext as string, cipherkey: cipherkey as string, iv: iv as string });
  if (!isResponsePlaintext(plaintext, requestId, clientKeys.publicKeyB64)) throw new Error("answer is not an API v1 response for this request and key");
  return plaintext.api_v1_response;
}

/**
 * Opens the `encrypted_progress` of a 202 from `responses/retrieve`, only if it is for this request
 * and newer than the last one, as upstream `static/chat.js` checks. Progress is best effort and never
 * changes a request's outcome, so anything else is just dropped.
 */
export async function openProgress(clientKeys: KeyPair, requestId: string, outer: unknown, lastSequence: number): Promise<Progress | undefined> {
  if (!isObject(outer) || outer.client_public_key !== clientKeys.publicKeyB64 || outer.request_id !== requestId) return undefined;
  if (outer.protocol !== PROTOCOL || outer.version !== VERSION || !strings(outer.ciphertext, outer.cipherkey, outer.iv)) return undefined;
  try {
    const plaintext = await openJson(clientKeys, { ciphertext: outer.ciphertext as string, cipherkey: outer.cipherkey as string, iv: outer.iv as string });
    return isProgressPlaintext(plaintext, requestId, clientKeys.publicKeyB64, lastSequence) ? plaintext.api_v1_progress : undefined;
  } catch {
    return undefined;
  }
}
