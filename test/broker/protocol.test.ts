import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { fakeKey, job, type TestRelay } from "../helpers/relay.ts";
import { BROKER_BACKENDS, startBrokerRelay } from "./backends.ts";

// Every route and error case of ../shared/spec/relay-protocol.md, over real HTTP, per store
// backend. Long-poll is off here (RELAY_LONG_POLL_MS=0) so "nothing yet" answers come at once;
// holding is tested apart.
for (const backend of BROKER_BACKENDS) {
  const why = backend.unavailable?.();
  describe.skipIf(why !== undefined)(`legacy protocol: ${backend.name}`, () => {
    let relay: TestRelay;
    beforeAll(async () => {
      relay = await startBrokerRelay(backend, { RELAY_LONG_POLL_MS: "0" });
    });
    afterAll(() => relay.shutdown());

    const register = async (key: string, extra: Record<string, unknown> = {}) => {
      const res = await relay.post("/sink", { server_public_key: key, ...extra });
      expect(res.status).toBe(200);
      return res.json() as Promise<Record<string, unknown>>;
    };

    describe("GET /next_server", () => {
      test("no nodes: status 200 with the nested 503 error body", async () => {
        const fresh = await startBrokerRelay(backend, { RELAY_LONG_POLL_MS: "0" });
        try {
          const res = await fresh.get("/next_server");
          expect(res.status).toBe(200);
          expect(await res.json()).toEqual({ error: { message: "No servers available", code: 503 } });
        } finally {
          await fresh.shutdown();
        }
      });

      test("returns one of the registered keys, chosen at random", async () => {
        const keys = [fakeKey("a"), fakeKey("b"), fakeKey("c")];
        for (const k of keys) await register(k);
        const seen = new Set<string>();
        for (let i = 0; i < 60; i++) {
          const body = (await (await relay.get("/next_server")).json()) as { server_public_key: string };
          expect(typeof body.server_public_key).toBe("string");
          seen.add(body.server_public_key);
        }
        for (const k of keys) expect(seen.has(k)).toBe(true);
      });
    });

    describe("POST /faucet", () => {
      test("accepts a job for a registered node", async () => {
        const key = fakeKey();
        await register(key);
        const res = await relay.post("/faucet", job(key));
        expect(res.status).toBe(200);
        expect(res.headers.get("content-type")).toContain("application/json");
        expect(await res.json()).toEqual({ message: "Request received" });
      });

      const invalid = { error: { message: "Invalid request data", code: 400 } };
      test.each([
        ["non-JSON body", "this is not json"],
        ["JSON array", "[1,2]"],
        ["empty body", ""],
        ["missing chat_history", JSON.stringify({ server_public_key: "k", cipherkey: "c", iv: "i" })],
        ["missing iv", JSON.stringify({ server_public_key: "k", chat_history: "h", cipherkey: "c" })],
        ["missing server key", JSON.stringify({ chat_history: "h", cipherkey: "c", iv: "i" })],
        ["wrong type for chat_history", JSON.stringify({ server_public_key: "k", chat_history: 5, cipherkey: "c", iv: "i" })],
        ["wrong type for stream", JSON.stringify({ server_public_key: "k", chat_history: "h", cipherkey: "c", iv: "i", stream: "yes" })],
      ])("%s: 400 Invalid request data", async (_name, body) => {
        const res = await relay.post("/faucet", body);
        expect(res.status).toBe(400);
        expect(await res.json()).toEqual(invalid);
      });

      test("optional fields sent as null (Python None) count as absent", async () => {
        const key = fakeKey();
        await register(key);
        expect((await relay.post("/faucet", job(key, { client_public_key: null, stream: null }))).status).toBe(200);
        const streamNoKey = await relay.post("/faucet", job(key, { client_public_key: null, stream: true }));
        expect(streamNoKey.status).toBe(400);
        expect(((await streamNoKey.json()) as { error: { message: string } }).error.message).toBe("Streaming requests require a client public key");
      });

      test("stream without client_public_key: 400 with the streaming message", async () => {
        const key = fakeKey();
        await register(key);
        const res = await relay.post("/faucet", job(key, { stream: true }));
        expect(res.status).toBe(400);
        expect(await res.json()).toEqual({ error: { message: "Streaming requests require a client public key", code: 400 } });
      });

      test("unknown server key: 404 with the flat error string", async () => {
        const res = await relay.post("/faucet", job(fakeKey("nobody")));
        expect(res.status).toBe(404);
        expect(await res.json()).toEqual({ error: "Server with the specified public key not found" });
      });
    });

    describe("POST /sink", () => {
      test("registers the node and tells it when to come back", async () => {
        const key = fakeKey();
        const body = await register(key);
        expect(body).toEqual({ next_ping_in_x_seconds: 10 });
        const health = (await (await relay.get("/healthz")).json()) as { knownServers: number };
        expect(health.knownServers).toBeGreaterThanOrEqual(1);
      });

      test("missing key: 400 Invalid public key; bad batch size: 400 Invalid max_batch_size", async () => {
        for (const body of [{}, { server_public_key: "" }, { server_public_key: 7 }, "garbage"]) {
          const res = await relay.post("/sink", body);
          expect(res.status).toBe(400);
          expect(await res.json()).toEqual({ error: "Invalid public key" });
        }
        for (const max_batch_size of [0, -1, 1.5, "2", null]) {
          const res = await relay.post("/sink", { server_public_key: fakeKey(), max_batch_size });
          expect(res.status).toBe(400);
          expect(await res.json()).toEqual({ error: "Invalid max_batch_size" });
        }
      });

      test("pops queued jobs FIFO and copies the first job to the top level", async () => {
        const key = fakeKey();
        const client = fakeKey("client");
        await register(key);
        for (const n of [1, 2, 3]) await relay.post("/faucet", job(key, { chat_history: `h${n}`, client_public_key: client }));
        const first = await register(key);
        expect(first).toEqual({ next_ping_in_x_seconds: 0, client_public_key: client, chat_history: "h1", cipherkey: "a2V5", iv: "aXY=" });
        expect(first.batch).toBeUndefined();
        const rest = await register(key, { max_batch_size: 5 });
        expect(rest.chat_history).toBe("h2");
        expect((rest.batch as { chat_history: string }[]).map((j) => j.chat_history)).toEqual(["h2", "h3"]);
        expect(await register(key)).toEqual({ next_ping_in_x_seconds: 10 });
      });

      test("a streaming job carries stream: true and a fresh stream_session_id", async () => {
        const key = fakeKey();
        const client = fakeKey("client");
        await register(key);
        await relay.post("/faucet", job(key, { stream: true, client_public_key: client }));
        await relay.post("/faucet", job(key, { stream: true, client_public_key: client }));
        const a = await register(key);
        const b = await register(key);
        expect(a.stream).toBe(true);
        expect(typeof a.stream_session_id).toBe("string");
        expect(b.stream_session_id).not.toBe(a.stream_session_id);
        // The newer session replaced the older one for this client.
        const old = await relay.post("/stream/source", { session_id: a.stream_session_id, chunk: "c" });
        expect(old.status).toBe(404);
        const cur = await relay.post("/stream/source", { session_id: b.stream_session_id, chunk: "c" });
        expect(cur.status).toBe(200);
      });
    });

    describe("POST /source and /retrieve", () => {
      test("an answer is delivered once, then 'no response' with status 200", async () => {
        const client = fakeKey("client");
        const res = await relay.post("/source", { client_public_key: client, chat_history: "ans", cipherkey: "k", iv: "v" });
        expect(res.status).toBe(200);
        expect(await res.json()).toEqual({ message: "Response received and queued for client" });
        const got = await relay.post("/retrieve", { client_public_key: client });
        expect(got.status).toBe(200);
        expect(await got.json()).toEqual({ chat_history: "ans", cipherkey: "k", iv: "v" });
        const again = await relay.post("/retrieve", { client_public_key: client });
        expect(again.status).toBe(200);
        expect(await again.json()).toEqual({ error: "No response available for the given public key" });
      });

      test("invalid bodies: 400 Invalid request data (flat)", async () => {
        for (const body of [{}, { client_public_key: "c" }, { client_public_key: "c", chat_history: "h", cipherkey: 1, iv: "v" }, "x"]) {
          const res = await relay.post("/source", body);
          expect(res.status).toBe(400);
          expect(await res.json()).toEqual({ error: "Invalid request data" });
        }
        for (const body of [{}, { client_public_key: 3 }, "[]"]) {
          const res = await relay.post("/retrieve", body);
          expect(res.status).toBe(400);
          expect(await res.json()).toEqual({ error: "Invalid request data" });
        }
      });
    });

    describe("streaming: /stream/source and /stream/retrieve", () => {
      test("chunks drain in order, and final ends the session", async () => {
        const key = fakeKey();
        const client = fakeKey("client");
        await register(key);
        await relay.post("/faucet", job(key, { stream: true, client_public_key: client }));
        const { stream_session_id: sid } = await register(key);

        const empty = await (await relay.post("/stream/retrieve", { client_public_key: client })).json();
        expect(empty).toEqual({ stream: true, session_id: sid, chunks: [], final: false });

        for (const chunk of ["one", { ciphertext: "two", iv: "x" }]) {
          const res = await relay.post("/stream/source", { session_id: sid, chunk });
          expect(await res.json()).toEqual({ message: "Chunk stored", final: false });
        }
        const part = await (await relay.post("/stream/retrieve", { client_public_key: client })).json();
        expect(part).toEqual({ stream: true, session_id: sid, chunks: ["one", { ciphertext: "two", iv: "x" }], final: false });

        const last = await relay.post("/stream/source", { session_id: sid, chunk: "three", final: true });
        expect(await last.json()).toEqual({ message: "Chunk stored", final: true });
        const done = await (await relay.post("/stream/retrieve", { client_public_key: client })).json();
        expect(done).toEqual({ stream: true, session_id: sid, chunks: ["three"], final: true });

        const after = await (await relay.post("/stream/retrieve", { client_public_key: client })).json();
        expect(after).toEqual({ error: "No active stream for the given public key" });
        expect((await relay.post("/stream/source", { session_id: sid, chunk: "late" })).status).toBe(404);
      });

      test("unknown session: 404; invalid bodies: 400", async () => {
        const res = await relay.post("/stream/source", { session_id: "nope", chunk: "c" });
        expect(res.status).toBe(404);
        expect(await res.json()).toEqual({ error: "Unknown stream session" });
        for (const body of [{ session_id: "s" }, { chunk: "c" }, { session_id: "s", chunk: null }, { session_id: "s", chunk: "c", final: "yes" }]) {
          const bad = await relay.post("/stream/source", body);
          expect(bad.status).toBe(400);
          expect(await bad.json()).toEqual({ error: "Invalid request data" });
        }
        const noKey = await relay.post("/stream/retrieve", {});
        expect(noKey.status).toBe(400);
      });

      test("a chunk after the final one is refused with 409 while the client has not drained", async () => {
        const key = fakeKey();
        const client = fakeKey("client");
        await register(key);
        await relay.post("/faucet", job(key, { stream: true, client_public_key: client }));
        const { stream_session_id: sid } = await register(key);
        await relay.post("/stream/source", { session_id: sid, chunk: "end", final: true });
        const late = await relay.post("/stream/source", { session_id: sid, chunk: "late" });
        expect(late.status).toBe(409);
        expect(((await late.json()) as { error: { type: string } }).error.type).toBe("stream_already_final");
      });
    });

    describe("generic HTTP behaviour", () => {
      test("unknown route: JSON 404; wrong method: JSON 405 with Allow", async () => {
        const nf = await relay.get("/does-not-exist");
        expect(nf.status).toBe(404);
        expect(((await nf.json()) as { error: { code: number } }).error.code).toBe(404);
        const wrong = await relay.get("/faucet");
        expect(wrong.status).toBe(405);
        expect(wrong.headers.get("allow")).toBe("POST");
        const wrong2 = await relay.post("/next_server", {});
        expect(wrong2.status).toBe(405);
        expect(wrong2.headers.get("allow")).toContain("GET");
      });

      test("X-Request-Id is echoed when safe and generated otherwise", async () => {
        const echoed = await fetch(relay.url + "/livez", { headers: { "X-Request-Id": "abc-123" } });
        expect(echoed.headers.get("x-request-id")).toBe("abc-123");
        const unsafe = await fetch(relay.url + "/livez", { headers: { "X-Request-Id": "evil\tinjection {}" } });
        expect(unsafe.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
        const generated = await relay.post("/faucet", "x");
        expect(generated.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
      });

      test("/livez answers alive", async () => {
        const res = await relay.get("/livez");
        expect(res.status).toBe(200);
        expect(await res.json()).toEqual({ status: "alive" });
      });
    });

    describe("route table", () => {
      test("the app serves exactly the routes the config protects from proxy prefixes", async () => {
        const { RELAY_ROUTES } = await import("../../src/routes.ts");
        expect([...relay.app.routes].sort()).toEqual([...RELAY_ROUTES].sort());
      });
    });
  });
}
