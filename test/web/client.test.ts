/**
 * The chat page's own code, run under Bun (WebCrypto is the same API): its hybrid encryption
 * against the demo's (src/demo/crypto.ts, itself checked against upstream's encrypt.py in
 * test/demo-crypto.test.ts) in both directions and both key wraps, and its relay calls' mapping
 * of every refusal to one plain Problem, against a real relay and against stubbed answers.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { generateKeyPair, openJson, sealJson, sealText, toB64 as demoB64, type KeyPair } from "../../src/demo/crypto.ts";
import { createClientKeys, type ClientKeys, fromB64, openFromNode, randomHex, sealForNode, toB64 } from "../../src/web/client/crypto.ts";
import { cancelRequest, fetchStatus, Problem, queueRequest, retrieveOnce, selectNode, type ProblemKind } from "../../src/web/client/relay.ts";
import { fakeKey, startTestRelay, type TestRelay } from "../helpers/relay.ts";
import { NODE_CAPS } from "../v1/helpers.ts";

const PYTHON_PEM = /^-----BEGIN PUBLIC KEY-----\n(?:[A-Za-z0-9+/=]{64}\n)+[A-Za-z0-9+/=]{1,64}\n-----END PUBLIC KEY-----\n$/;

describe("the page's encryption interoperates with the node's scheme", () => {
  let page: ClientKeys;
  let node: KeyPair;
  beforeAll(async () => {
    [page, node] = await Promise.all([createClientKeys(), generateKeyPair()]);
  });

  test("the page's public key is base64 of a PEM exactly as Python writes it", () => {
    expect(atob(page.publicKeyB64)).toMatch(PYTHON_PEM);
    expect(page.rsa.n.toString(2)).toHaveLength(2048);
  });

  test("page -> node: sealed with RSA-OAEP/SHA-256 + AES-256-CBC, opened by the node's code", async () => {
    const message = { protocol: "tokenplace_api_v1_relay_e2ee", text: "héllo ✓ ".repeat(300) };
    const env = await sealForNode(node.publicKeyB64, JSON.stringify(message));
    expect(fromB64(env.iv)).toHaveLength(16);
    expect(fromB64(env.cipherkey)).toHaveLength(256);
    expect(await openJson(node, env)).toEqual(message);
  });

  test("node -> page: opened whether the node wrapped with PKCS#1 v1.5 (as server.py does) or OAEP", async () => {
    for (const wrap of ["pkcs1v15", "oaep"] as const) {
      const env = await sealJson(page.publicKeyB64, { wrap, answer: "Paris" }, wrap);
      expect(JSON.parse(await openFromNode(page, env))).toEqual({ wrap, answer: "Paris" });
    }
  });

  test("anything else does not open: another key, a damaged wrapped key, a damaged IV or ciphertext", async () => {
    const other = await createClientKeys();
    const env = await sealText(page.publicKeyB64, "secret", "pkcs1v15");
    await expect(openFromNode(other, env)).rejects.toThrow();
    const flip = (b64: string, i: number) => {
      const b = fromB64(b64);
      b[i % b.length]! ^= 0x01;
      return toB64(b);
    };
    await expect(openFromNode(page, { ...env, cipherkey: flip(env.cipherkey, 7) })).rejects.toThrow();
    await expect(openFromNode(page, { ...env, iv: toB64(new Uint8Array(8)) })).rejects.toThrow();
    await expect(openFromNode(page, { ...env, ciphertext: flip(env.ciphertext, 0) })).rejects.toThrow();
    await expect(openFromNode(page, { ...env, cipherkey: "not base64!" })).rejects.toThrow();
  });

  test("base64 and random ids agree with the demo's", () => {
    const bytes = crypto.getRandomValues(new Uint8Array(100_000));
    expect(toB64(bytes)).toBe(demoB64(bytes));
    expect(fromB64(toB64(bytes))).toEqual(bytes);
    expect(() => fromB64("abc")).toThrow();
    expect(randomHex()).toMatch(/^[0-9a-f]{32}$/);
    expect(randomHex()).not.toBe(randomHex());
  });
});

describe("the page's relay calls: one plain Problem per failure", () => {
  let relay: TestRelay;
  const realFetch = globalThis.fetch;
  /** The page calls same-origin paths; here they go to the test relay, or to a stubbed answer. */
  let stub: ((path: string, init?: RequestInit) => Response | Promise<Response>) | undefined;
  beforeAll(() => {
    relay = startTestRelay({ RELAY_V1_RETRIEVE_HOLD_MS: "0" });
    globalThis.fetch = (async (input: string | URL | Request, init?: RequestInit) => {
      const path = String(input);
      if (!path.startsWith("/")) return realFetch(input, init); // the test's own calls
      if (stub) return stub(path, init);
      return realFetch(relay.url + path, init);
    }) as typeof fetch;
  });
  afterEach(() => {
    stub = undefined;
  });
  afterAll(async () => {
    globalThis.fetch = realFetch;
    await relay.shutdown();
  });

  const problemOf = async (p: Promise<unknown>): Promise<Problem> => {
    try {
      await p;
    } catch (err) {
      if (err instanceof Problem) return err;
      throw err;
    }
    throw new Error("expected a Problem");
  };

  test("no node online, then no node for the model, then a node; the status summary follows", async () => {
    expect((await problemOf(selectNode("qwen3-8b-instruct", "8k-fast"))).kind).toBe("no_node_online");
    const key = fakeKey("node");
    expect((await relay.post("/api/v1/relay/servers/register", { server_public_key: key, capabilities: NODE_CAPS })).status).toBe(200);
    const p = await problemOf(selectNode("other-model", "8k-fast"));
    expect(p.kind).toBe("no_node_for_model");
    expect(p.message).toContain("other-model");
    expect((await problemOf(selectNode("qwen3-8b-instruct", "64k-full"))).kind).toBe("no_node_for_model");
    expect(await selectNode("qwen3-8b-instruct", "8k-fast")).toEqual({ serverPublicKey: key, selectedContextTier: "8k-fast" });
    await Bun.sleep(1_100);
    const status = await fetchStatus();
    expect(status.nodes_online).toBe(1);
    expect(status.models.map((m) => m.id)).toEqual(["qwen3-8b-instruct"]);
  });

  test("queue, wait (pending), cancel with the proof, then the relay says cancelled", async () => {
    const key = fakeKey("node2");
    await relay.post("/api/v1/relay/servers/register", { server_public_key: key, capabilities: NODE_CAPS });
    const client = fakeKey("client");
    const id = `web-${randomHex()}`;
    const cancelToken = randomHex(24);
    const q = await queueRequest({ server_public_key: key, client_public_key: client, chat_history: "Y2lwaGVy", cipherkey: "a2V5", iv: "aXY=", request_id: id, cancel_token: cancelToken });
    expect(q.ttlSeconds).toBe(480);
    expect(await retrieveOnce(client, id, new AbortController().signal)).toEqual({ kind: "pending" });
    expect(await cancelRequest(client, id, "wrong-proof")).toBe(false);
    expect(await cancelRequest(client, id, cancelToken)).toBe(true);
    const p = await problemOf(retrieveOnce(client, id, new AbortController().signal));
    expect(p.kind).toBe("cancelled");
    expect((await problemOf(queueRequest({ server_public_key: fakeKey("gone"), client_public_key: client, chat_history: "Y2lwaGVy", cipherkey: "a2V5", iv: "aXY=", request_id: `web-${randomHex()}`, cancel_token: "x" }))).kind).toBe("node_gone");
  });

  test("stubbed refusals: rate limited with the wait, full relay, busy node, expired, node gone, unknown, unreachable, unexpected", async () => {
    const json = (status: number, body: unknown, headers: Record<string, string> = {}) => () =>
      new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });
    const cases: [ReturnType<typeof json> | (() => never), () => Promise<unknown>, ProblemKind, RegExp][] = [
      [json(429, { error: { code: "rate_limit_exceeded", type: "rate_limit_error" } }, { "Retry-After": "17" }), () => selectNode("m", "8k-fast"), "rate_limited", /in 17 seconds/],
      [json(429, { error: { code: "queue_full" } }), () => queueRequest({} as never), "busy", /queue/],
      [json(503, { error: { code: "storage_full" } }), () => queueRequest({} as never), "relay_full", /capacity/],
      [json(503, { error: { code: "no_available_capacity" } }), () => selectNode("m", "8k-fast"), "busy", /busy/],
      [json(410, { error: { code: "expired", status: "expired", reason: "pending_request_ttl_exceeded" } }), () => retrieveOnce("c", "r", new AbortController().signal), "expired", /in time/],
      [json(410, { error: { code: "cancelled", status: "cancelled", reason: "server_unregistered" } }), () => retrieveOnce("c", "r", new AbortController().signal), "node_gone", /offline/],
      [json(404, { error: { code: 404 } }), () => retrieveOnce("c", "r", new AbortController().signal), "unknown_request", /no longer knows/],
      [() => { throw new TypeError("Failed to fetch"); }, () => selectNode("m", "8k-fast"), "unreachable", /cannot be reached/],
      [() => new Response("<html>bad gateway</html>", { status: 502 }), () => selectNode("m", "8k-fast"), "unexpected", /HTTP 502/],
    ];
    for (const [answer, call, kind, message] of cases) {
      stub = answer;
      const p = await problemOf(call());
      expect({ kind: p.kind, message: message.test(p.message) }).toEqual({ kind, message: true });
    }
    stub = json(429, { error: { code: "rate_limit_exceeded" } }, { "Retry-After": "17" });
    expect((await problemOf(selectNode("m", "8k-fast"))).retryAfterSeconds).toBe(17);
  });

  test("the relay's own public rate limit (429 rate_limit_exceeded, Retry-After) reads as 'rate limited' with the wait", async () => {
    const limited = startTestRelay({ API_RATE_LIMIT: "2/minute" });
    const saved = globalThis.fetch;
    globalThis.fetch = ((input: string | URL | Request, init?: RequestInit) => realFetch(String(input).startsWith("/") ? limited.url + String(input) : input, init)) as typeof fetch;
    try {
      const key = fakeKey("limited-node");
      await limited.post("/api/v1/relay/servers/register", { server_public_key: key, capabilities: NODE_CAPS });
      const body = () => ({ server_public_key: key, client_public_key: fakeKey("c"), chat_history: "Y2lwaGVy", cipherkey: "a2V5", iv: "aXY=", request_id: `web-${randomHex()}`, cancel_token: "t" });
      await queueRequest(body());
      await queueRequest(body());
      const p = await problemOf(queueRequest(body()));
      expect(p.kind).toBe("rate_limited");
      expect(p.retryAfterSeconds).toBeGreaterThan(0);
      expect(p.retryAfterSeconds).toBeLessThanOrEqual(60);
      expect(p.message).toContain(`You can send again in ${p.retryAfterSeconds} second`);
    } finally {
      globalThis.fetch = saved;
      await limited.shutdown();
    }
  });

  test("a `requests` body carries the envelope fields and nothing else", async () => {
    const sent: string[] = [];
    stub = (_path, init) => {
      sent.push(String(init?.body ?? ""));
      return new Response(JSON.stringify({ message: "Request received", request_ttl_seconds: 480 }), { status: 200 });
    };
    await queueRequest({ server_public_key: "s", client_public_key: "c", chat_history: "x", cipherkey: "k", iv: "i", request_id: "r", cancel_token: "t" });
    expect(Object.keys(JSON.parse(sent[0]!)).sort()).toEqual(
      ["cancel_token", "chat_history", "cipherkey", "client_public_key", "iv", "protocol", "request_id", "server_public_key", "version"].sort(),
    );
  });
});
