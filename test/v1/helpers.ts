import { NODE_CAPABILITIES } from "../../src/demo/protocol.ts";
import type { RelayOverrides } from "../../src/relay.ts";
import { ManualClock } from "../../src/clock.ts";
import { v1Limits } from "../../src/state/backend.ts";
import { fakeKey, startTestRelay, testConfig, type TestRelay } from "../helpers/relay.ts";
import { BACKENDS, type Backend } from "./backends.ts";

export const PROTOCOL = "tokenplace_api_v1_relay_e2ee";
/** What the unmodified node sends on register and every poll (one definition, the demo node's). */
export const NODE_CAPS = NODE_CAPABILITIES;

export type Json = Record<string, any>;

/** A relay with the API v1 store of `backend` and a clock the test moves. */
export function startV1Relay(env: Record<string, string> = {}, backend: Backend = BACKENDS[0]!, o: RelayOverrides = {}): TestRelay & { clock: ManualClock } {
  const clock = new ManualClock();
  const fullEnv = { TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS: "0", RELAY_V1_RETRIEVE_HOLD_MS: "0", ...env };
  // The backend gets the bounds the relay's settings ask for, as in production.
  const limits = v1Limits(testConfig(fullEnv));
  const relay = startTestRelay(fullEnv, { clock, v1Store: (events) => backend.make(clock, events, limits), ...o });
  return Object.assign(relay, { clock });
}

/** A compute node and a client speaking API v1 over real HTTP, as the upstream peers do. */
export function v1Peers(relay: TestRelay, token?: string) {
  const nodeHeaders: Record<string, string> = token ? { "X-Relay-Server-Token": token } : {};
  const call = async (path: string, body: unknown, headers: Record<string, string> = {}) => {
    const res = await relay.post(`/api/v1/relay/${path}`, body, headers);
    return { status: res.status, body: (await res.json()) as Json, headers: res.headers };
  };
  return {
    call,
    async register(key = fakeKey("node"), capabilities: unknown = NODE_CAPS) {
      const r = await call("servers/register", { server_public_key: key, capabilities }, nodeHeaders);
      if (r.status !== 200) throw new Error(`register: ${r.status} ${JSON.stringify(r.body)}`);
      return { key, credential: r.body.control_credential as string, body: r.body };
    },
    poll: (key: string, extra: Json = {}) => call("servers/poll", { server_public_key: key, capabilities: NODE_CAPS, ...extra }, nodeHeaders),
    control: (key: string, credential: string | undefined, requestId: string, extra: Json = {}) =>
      call("servers/control", { server_public_key: key, request_id: requestId, control_credential: credential, ...extra }, nodeHeaders),
    unregister: (key: string, credential: string | undefined) => call("servers/unregister", { server_public_key: key, control_credential: credential }, nodeHeaders),
    respond: (clientKey: string, requestId: string | undefined, extra: Json = {}) =>
      call("responses", { client_public_key: clientKey, request_id: requestId, protocol: PROTOCOL, version: 1, chat_history: "YW5zd2Vy", cipherkey: "a2V5Mg==", iv: "aXYy", ...extra }, nodeHeaders),
    progress: (key: string, credential: string, clientKey: string, requestId: string, extra: Json = {}) =>
      call(
        "progress",
        { server_public_key: key, client_public_key: clientKey, request_id: requestId, control_credential: credential, protocol: PROTOCOL, version: 1, ciphertext: "cHJvZw==", cipherkey: "cGs=", iv: "cGk=", ...extra },
        nodeHeaders,
      ),
    next: async (query = "") => {
      const res = await relay.get(`/api/v1/relay/servers/next${query}`);
      return { status: res.status, body: (await res.json()) as Json, headers: res.headers };
    },
    request: (serverKey: string, clientKey: string, requestId: string | undefined, extra: Json = {}) =>
      call("requests", {
        server_public_key: serverKey,
        client_public_key: clientKey,
        chat_history: "Y2lwaGVydGV4dA==",
        cipherkey: "a2V5",
        iv: "aXY=",
        protocol: PROTOCOL,
        version: 1,
        ...(requestId === undefined ? {} : { request_id: requestId }),
        cancel_token: "proof-" + requestId,
        ...extra,
      }),
    cancel: (clientKey: string, requestId: string, proof: string | undefined = "proof-" + requestId, extra: Json = {}) =>
      call("requests/cancel", { client_public_key: clientKey, request_id: requestId, cancel_token: proof, ...extra }),
    retrieve: (clientKey: string, requestId?: string) => call("responses/retrieve", { client_public_key: clientKey, request_id: requestId }),
  };
}

export const rid = () => `chat-client-${crypto.randomUUID().replaceAll("-", "")}`;
