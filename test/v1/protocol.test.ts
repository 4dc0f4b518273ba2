// Every API v1 route and error path of the token.place API v1 relay spec (§6), over real HTTP,
// against every store backend. Holds are off here (poll_wait 0); test/v1/long-poll.test.ts holds.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { fakeKey, type TestRelay } from "../helpers/relay.ts";
import { BACKENDS } from "./backends.ts";
import { NODE_CAPS, PROTOCOL, rid, startV1Relay, v1Peers, type Json } from "./helpers.ts";

const TOKEN = "registration-token-0123456789";

for (const backend of BACKENDS) {
  const why = backend.unavailable?.();
  describe.skipIf(why !== undefined)(`API v1 over HTTP (${backend.name} store)`, () => {
    let relay: TestRelay & { clock: import("../../src/clock.ts").ManualClock };
    let p: ReturnType<typeof v1Peers>;
    beforeAll(() => {
      relay = startV1Relay({ TOKEN_PLACE_RELAY_SERVER_TOKEN: TOKEN, TOKEN_PLACE_OPERATOR_TOKEN: "operator-token-0123456789" }, backend);
      p = v1Peers(relay, TOKEN);
    });
    afterAll(() => relay.shutdown());

    /** A registered node with one claimed (in-flight) request. */
    const inFlight = async () => {
      const node = await p.register();
      const client = fakeKey("client");
      const id = rid();
      expect((await p.request(node.key, client, id)).status).toBe(200);
      const work = await p.poll(node.key);
      expect(work.body.request_id).toBe(id);
      return { node, client, id };
    };

    describe("servers/register", () => {
      test("issues a 43-character credential once, advertises progress, and renews without rotating", async () => {
        const key = fakeKey("node");
        const first = await p.register(key);
        expect(first.body).toEqual({
          next_ping_in_x_seconds: 30,
          poll_wait_seconds: 0,
          relay_capabilities: { encrypted_progress_v1: true },
          control_credential: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/),
        });
        const again = await p.register(key);
        expect(again.body.control_credential).toBeUndefined();
        expect((await p.control(key, first.credential, "none")).body.status).toBe("completed/unavailable");
      });

      test("401 without the registration token, before the body is looked at", async () => {
        const r = await p.call("servers/register", "not json");
        expect(r.status).toBe(401);
        expect(r.body).toEqual({ error: { message: "Missing or invalid relay server token", code: 401 } });
        expect((await p.call("servers/register", { server_public_key: "k" }, { "X-Relay-Server-Token": "wrong-token-0123456789" })).status).toBe(401);
      });

      test.each([
        ["not JSON", "{nope", { message: "Invalid request data", code: 400 }],
        ["a JSON array", "[]", { message: "Invalid request data", code: 400 }],
        ["a bare string", '"server_public_key"', { message: "Invalid request data", code: 400 }],
        ["no key", {}, { message: "Missing server public key", code: 400 }],
        ["an empty key", { server_public_key: "" }, { message: "Missing server public key", code: 400 }],
        ["a non-string key", { server_public_key: 42 }, { message: "Missing server public key", code: 400 }],
      ])("400 for %s", async (_name, body, error) => {
        const r = await p.call("servers/register", body, { "X-Relay-Server-Token": TOKEN });
        expect(r.status).toBe(400);
        expect(r.body).toEqual({ error });
      });

      test.each([
        ["not an object", [1], "capabilities must be an object"],
        ["api_version 2", { ...NODE_CAPS, api_version: "v2" }, "capabilities.api_version must be v1"],
        ["an unknown tier", { ...NODE_CAPS, active_context_tier: "1m" }, "capabilities.active_context_tier is unsupported"],
        ["a numeric tier", { ...NODE_CAPS, active_context_tier: 8 }, "capabilities.active_context_tier must be a string"],
        ["no model ids", { ...NODE_CAPS, supported_model_ids: [] }, "capabilities.supported_model_ids must be a non-empty string list"],
        ["65 model ids", { ...NODE_CAPS, supported_model_ids: Array.from({ length: 65 }, (_, i) => `m${i}`) }, "capabilities.supported_model_ids must be a non-empty string list"],
        ["a 129-char model id", { ...NODE_CAPS, supported_model_ids: ["m".repeat(129)] }, "capabilities.supported_model_ids must be a non-empty string list"],
        ["context below the tier", { ...NODE_CAPS, maximum_total_context_tokens: 4096 }, "capabilities.maximum_total_context_tokens is below the active tier"],
        ["a boolean context", { ...NODE_CAPS, maximum_total_context_tokens: true }, "capabilities.maximum_total_context_tokens must be a positive integer"],
        ["concurrency 129", { ...NODE_CAPS, max_concurrency: 129 }, "capability token reservations and concurrency must be positive integers"],
        ["reservation above max", { ...NODE_CAPS, default_output_token_reservation: 9000 }, "default output reservation cannot exceed maximum output tokens"],
        ["a numeric backend", { ...NODE_CAPS, backend_class: 1 }, "capabilities.backend_class must be a string"],
      ])("400 invalid_capabilities for %s, and nothing registered", async (_name, capabilities, message) => {
        const key = fakeKey("bad");
        const r = await p.call("servers/register", { server_public_key: key, capabilities }, { "X-Relay-Server-Token": TOKEN });
        expect(r.status).toBe(400);
        expect(r.body).toEqual({ error: { message, code: "invalid_capabilities" } });
        expect((await p.poll(key)).status).toBe(404);
      });

      test("capabilities are normalised: aliases, trimming, lower case, de-duplication, unknown backend", async () => {
        const key = fakeKey("norm");
        await p.register(key, { context_tier: " 64k-full ", model_ids: [" Qwen3-8B-Instruct", "qwen3-8b-instruct"], backend_class: "TPU", extra: 1 });
        const diag = (await (await relay.get("/relay/diagnostics")).json()) as Json;
        const entry = diag.api_v1_registered_compute_nodes.find((n: Json) => n.server_public_key === key);
        expect(entry.capabilities).toEqual({
          api_version: "v1", supported_model_ids: ["qwen3-8b-instruct"], active_context_tier: "64k-full", maximum_total_context_tokens: 65536,
          default_output_token_reservation: 1024, maximum_output_tokens: 1024, max_concurrency: 1, backend_class: "unknown",
        });
        await p.call("servers/unregister", { server_public_key: key, control_credential: "x" }, { "X-Relay-Server-Token": TOKEN });
      });
    });

    describe("servers/poll", () => {
      test("unknown key: 404 (the node re-registers)", async () => {
        const r = await p.poll(fakeKey("ghost"));
        expect(r.status).toBe(404);
        expect(r.body).toEqual({ error: { message: "Server with the specified public key not found", code: 404 } });
      });

      test("no work, holds off: half the lease as next ping, so the node is back before its lease lapses", async () => {
        const node = await p.register();
        const r = await p.poll(node.key);
        expect(r.status).toBe(200);
        expect(r.body).toEqual({ message: "No requests available", next_ping_in_x_seconds: 15, poll_wait_seconds: 0 });
      });

      test("the work item is the client's envelope unchanged, with deadline metadata, no cancel proof, and 'come back now'", async () => {
        const node = await p.register();
        const client = fakeKey("client");
        const id = rid();
        relay.clock.advance(0);
        await p.request(node.key, client, id, { chat_history: undefined, ciphertext: "Y2lwaGVyLXNwZWxsaW5n" });
        relay.clock.advance(1_500);
        const r = await p.poll(node.key);
        expect(r.status).toBe(200);
        expect(r.body).toEqual({
          client_public_key: client,
          chat_history: "Y2lwaGVyLXNwZWxsaW5n",
          cipherkey: "a2V5",
          iv: "aXY=",
          request_id: id,
          protocol: PROTOCOL,
          version: 1,
          request_deadline_remaining_seconds: 478.5,
          request_ttl_seconds: 478.5,
          next_ping_in_x_seconds: 0,
        });
        expect(r.headers.get("access-control-allow-origin")).toBeNull();
      });

      test("400s: invalid body, missing key, bad capabilities", async () => {
        expect((await p.call("servers/poll", "[]", { "X-Relay-Server-Token": TOKEN })).body).toEqual({ error: { message: "Invalid request data", code: 400 } });
        expect((await p.call("servers/poll", {}, { "X-Relay-Server-Token": TOKEN })).body).toEqual({ error: { message: "Missing server public key", code: 400 } });
        const node = await p.register();
        const r = await p.poll(node.key, { capabilities: { max_concurrency: 0 } });
        expect(r.status).toBe(400);
        expect(r.body.error.code).toBe("invalid_capabilities");
      });
    });

    describe("servers/control", () => {
      test("active for held work, with next_poll_seconds and the time left", async () => {
        const { node, id } = await inFlight();
        const r = await p.control(node.key, node.credential, id);
        expect(r.status).toBe(200);
        expect(r.body).toEqual({ status: "active", next_poll_seconds: 1, request_deadline_remaining_seconds: 480, request_ttl_seconds: 480 });
      });

      test("cancelled after the client cancels; acknowledge removes the tombstone", async () => {
        const { node, client, id } = await inFlight();
        expect((await p.cancel(client, id)).body).toEqual({ status: "cancelled", request_id: id, removed_from_queue: 0 });
        expect((await p.control(node.key, node.credential, id)).body).toMatchObject({ status: "cancelled" });
        expect((await p.control(node.key, node.credential, id, { acknowledge: true })).body).toMatchObject({ status: "cancelled" });
        expect((await p.control(node.key, node.credential, id)).body).toEqual({ status: "completed/unavailable", next_poll_seconds: 1 });
      });

      test("403 for a wrong or missing credential; 400 without request_id", async () => {
        const { node, id } = await inFlight();
        const forbidden = { error: { message: "Missing or invalid relay server control credential", code: 403 } };
        expect(await p.control(node.key, "wrong", id)).toMatchObject({ status: 403, body: forbidden });
        expect(await p.control(node.key, undefined, id)).toMatchObject({ status: 403, body: forbidden });
        expect(await p.call("servers/control", { server_public_key: node.key }, { "X-Relay-Server-Token": TOKEN })).toMatchObject({
          status: 400, body: { error: { message: "Invalid request data", code: 400 } },
        });
      });

      test("past the deadline: expired", async () => {
        const { node, client, id } = await inFlight();
        relay.clock.advance(480_000);
        expect((await p.control(node.key, node.credential, id)).body).toEqual({
          status: "expired", next_poll_seconds: 1, request_deadline_remaining_seconds: 0, request_ttl_seconds: 0,
        });
        expect((await p.retrieve(client, id)).body).toEqual({ error: { message: "Request expired", code: "expired", status: "expired", reason: "provider_timeout" } });
      });
    });

    describe("servers/unregister and /unregister", () => {
      test("200 removed, then 200 not removed; queued work is cancelled", async () => {
        const node = await p.register();
        const client = fakeKey("c");
        const id = rid();
        await p.request(node.key, client, id);
        expect((await p.unregister(node.key, "wrong")).status).toBe(403);
        expect(await p.unregister(node.key, node.credential)).toMatchObject({ status: 200, body: { message: "Server unregistered", removed: true } });
        expect(await p.unregister(node.key, node.credential)).toMatchObject({ status: 200, body: { message: "Server unregistered", removed: false } });
        expect((await p.retrieve(client, id)).body.error).toMatchObject({ status: "cancelled", reason: "server_unregistered" });
        // A fresh registration gets a fresh credential.
        expect((await p.register(node.key)).credential).toMatch(/^[A-Za-z0-9_-]{43}$/);
      });

      test("400 shapes: v1 nested on the v1 route, legacy flat on the alias", async () => {
        const h = { "X-Relay-Server-Token": TOKEN };
        expect((await p.call("servers/unregister", { server_public_key: " " }, h)).body).toEqual({ error: { message: "Invalid public key", code: 400 } });
        const alias = await relay.post("/unregister", { server_public_key: "" }, h);
        expect(alias.status).toBe(400);
        expect(await alias.json()).toEqual({ error: "Invalid public key" });
        const aliasBad = await relay.post("/unregister", "nope", h);
        expect(await aliasBad.json()).toEqual({ error: "Invalid request data" });
        const node = await p.register();
        const ok = await relay.post("/unregister", { server_public_key: node.key, control_credential: node.credential }, h);
        expect(await ok.json()).toEqual({ message: "Server unregistered", removed: true });
        expect((await relay.post("/unregister", { server_public_key: node.key })).status).toBe(401);
      });
    });

    describe("servers/next", () => {
      test("503 with no nodes at all", async () => {
        const fresh = startV1Relay({}, backend);
        try {
          const r = await v1Peers(fresh).next();
          expect(r.status).toBe(503);
          expect(r.body).toEqual({ error: { message: "No registered compute nodes are available on this relay.", code: "no_registered_compute_nodes" } });
          expect((await v1Peers(fresh).next("?context_tier=huge")).body.error.code).toBe("no_registered_compute_nodes");
        } finally {
          await fresh.shutdown();
        }
      });

      test("model names never resolve through the object prototype", async () => {
        const fresh = startV1Relay({}, backend);
        const q = v1Peers(fresh);
        try {
          const node = await q.register(fakeKey("n"), { ...NODE_CAPS, supported_model_ids: ["constructor"] });
          expect((await q.next("?model=constructor")).body.server_public_key).toBe(node.key);
        } finally {
          await fresh.shutdown();
        }
      });

      test("selection metadata, model aliases, tier errors and spillover", async () => {
        const fresh = startV1Relay({}, backend);
        const q = v1Peers(fresh);
        try {
          const node = await q.register(fakeKey("n"), { ...NODE_CAPS, active_context_tier: "64k-full", maximum_total_context_tokens: 65536 });
          const r = await q.next("?model=GPT-3.5-Turbo");
          expect(r.status).toBe(200);
          expect(r.headers.get("access-control-allow-origin")).toBe("*");
          expect(r.body).toEqual({
            server_public_key: node.key,
            requested_context_tier: "8k-fast",
            requested_model: "GPT-3.5-Turbo",
            resolved_model: "qwen3-8b-instruct",
            selected_context_tier: "64k-full",
            selected_context_window_tokens: 65536,
            selected_model_support: ["qwen3-8b-instruct"],
            selection_policy: "best_fit_smallest_capable_least_loaded_v1",
            eligible_node_count: 1,
            eligible_tier_counts: { "64k-full": 1 },
            selected_queue_depth: 0,
            selected_in_flight_count: 0,
            selected_load_score: 0,
            spillover: true,
            spillover_reason: "no_smaller_eligible_node_available",
          });
          expect(await q.next("?context_tier=128k")).toMatchObject({ status: 400, body: { error: { message: "Unsupported context_tier", code: "invalid_context_tier" } } });
          expect((await q.next("?model=other")).body.error).toMatchObject({ code: "no_matching_compute_node", eligible_node_count: 0, requested_model: "other" });
          await q.request(node.key, fakeKey("c"), rid());
          await q.poll(node.key, { capabilities: null });
          const busy = await q.next();
          expect(busy.status).toBe(503);
          expect(busy.body.error).toMatchObject({ code: "no_available_capacity", capacity_limited_node_count: 1, capacity_limited_tier_counts: { "64k-full": 1 } });
        } finally {
          await fresh.shutdown();
        }
      });
    });

    describe("requests", () => {
      test("200 admitted with the deadline", async () => {
        const node = await p.register();
        const r = await p.request(node.key, fakeKey("c"), rid());
        expect(r.status).toBe(200);
        expect(r.body).toEqual({ message: "Request received", request_deadline_remaining_seconds: 480, request_ttl_seconds: 480 });
        expect(r.headers.get("access-control-allow-origin")).toBe("*");
        expect(r.headers.get("access-control-expose-headers")).toBe("Retry-After");
      });

      test.each([
        ["a plaintext field", { messages: [{ role: "user", content: "hi" }] }, "Plaintext relay payload fields are forbidden; send ciphertext envelope only", 400],
        ["an unexpected field", { e2ee_v1: true }, "Unexpected relay payload fields are forbidden; send ciphertext envelope only", 400],
        ["no iv", { iv: undefined }, "Invalid request data", 400],
        ["an empty ciphertext", { chat_history: "" }, "Invalid request data", 400],
        ["a numeric cipherkey", { cipherkey: 5 }, "Invalid request data", 400],
        ["no client key", { client_public_key: "" }, "Missing client public key", 400],
        ["a numeric request_id", { request_id: 7 }, "Invalid request data", 400],
        ["a string version", { version: "1" }, "Invalid request data", 400],
      ])("400 for %s", async (_n, extra, message, status) => {
        const node = await p.register();
        const r = await p.request(node.key, fakeKey("c"), rid(), extra);
        expect(r.status).toBe(status);
        expect(r.body).toEqual({ error: { message, code: 400 } });
      });

      test("404 for a server that is not registered; 409 for a live id; 400 for an oversized key", async () => {
        expect(await p.request(fakeKey("ghost"), fakeKey("c"), rid())).toMatchObject({ status: 404, body: { error: { message: "Server with the specified public key not found", code: 404 } } });
        const node = await p.register();
        const client = fakeKey("c");
        const id = rid();
        await p.request(node.key, client, id);
        expect(await p.request(node.key, client, id)).toMatchObject({ status: 409, body: { error: { code: "duplicate_request_id" } } });
        expect(await p.request(node.key, "k".repeat(8193), rid())).toMatchObject({ status: 400, body: { error: { code: "field_too_long", field: "client_public_key" } } });
      });

      test("oversized wrapped keys and IVs are refused; the byte budget answers 503 storage_full and frees on completion", async () => {
        const node = await p.register();
        expect(await p.request(node.key, fakeKey("c"), rid(), { cipherkey: "k".repeat(2049) })).toMatchObject({ status: 400, body: { error: { code: "field_too_long", field: "cipherkey" } } });
        expect(await p.request(node.key, fakeKey("c"), rid(), { iv: "i".repeat(65) })).toMatchObject({ status: 400, body: { error: { code: "field_too_long", field: "iv" } } });
        // One address may fill all of it here: the per-address share has its own test below.
        const small = startV1Relay({ RELAY_V1_MAX_STORED_BYTES: String(1024 * 1024), RELAY_V1_MAX_STORED_BYTES_PER_CLIENT: String(1024 * 1024) }, backend);
        const q = v1Peers(small);
        try {
          const n = await q.register();
          const client = fakeKey("c");
          const big = "A".repeat(400 * 1024);
          const first = rid();
          expect((await q.request(n.key, client, first, { chat_history: big })).status).toBe(200);
          expect((await q.request(n.key, client, rid(), { chat_history: big })).status).toBe(200);
          const full = await q.request(n.key, client, rid(), { chat_history: big });
          expect(full).toMatchObject({ status: 503, body: { error: { code: "storage_full" } } });
          expect(full.headers.get("retry-after")).toBe("5");
          await q.poll(n.key, { capabilities: null });
          await q.respond(client, first, { chat_history: "c21hbGw=" });
          expect((await q.retrieve(client, first)).status).toBe(200);
          expect((await q.request(n.key, client, rid(), { chat_history: big })).status).toBe(200);
        } finally {
          await small.shutdown();
        }
      });

      test("a ciphertext that is not base64 is relayed unchanged and charged what it costs: refused where base64 of its length fits", async () => {
        const small = startV1Relay({ RELAY_V1_MAX_STORED_BYTES: String(1024 * 1024), RELAY_V1_MAX_STORED_BYTES_PER_CLIENT: String(1024 * 1024) }, backend);
        const q = v1Peers(small);
        try {
          const n = await q.register();
          const client = fakeKey("c");
          // 400 Ki characters: 400 KiB as base64, 1.2 MB as UTF-8 (800 KiB in memory).
          const full = await q.request(n.key, client, rid(), { chat_history: "€".repeat(400 * 1024) });
          expect(full).toMatchObject({ status: 503, body: { error: { code: "storage_full" } } });
          const euro = "é€𝄞".repeat(25 * 1024);
          const id = rid();
          expect((await q.request(n.key, client, id, { chat_history: euro, request_id: id })).status).toBe(200);
          const held = await (await small.get("/metrics")).text();
          const counted = Number(/^tokenplace_relay_v1_stored_bytes (\d+)/m.exec(held)?.[1]);
          expect(counted).toBeGreaterThanOrEqual(Buffer.byteLength(euro));
          const work = await q.poll(n.key, { capabilities: null });
          expect(work.body.chat_history).toBe(euro);
          expect((await q.request(n.key, client, rid(), { chat_history: "A".repeat(400 * 1024) })).status).toBe(200);
        } finally {
          await small.shutdown();
        }
      });

      test("one address flooding requests is refused at its share (429 client_storage_full); another address is still admitted", async () => {
        // Default share: a quarter of the budget (256 KiB of 1 MiB). Addresses are named by the
        // test as a trusted proxy would (X-Forwarded-For from a trusted peer, src/http/client-ip.ts).
        const small = startV1Relay(
          { RELAY_V1_MAX_STORED_BYTES: String(1024 * 1024), RELAY_PROXY_TRUST_FORWARDED: "true", RELAY_TRUSTED_PROXY_CIDRS: "127.0.0.1/32" },
          backend,
        );
        const q = v1Peers(small);
        const from = (address: string, node: string, client: string, id: string) =>
          q.call("requests", {
            server_public_key: node, client_public_key: client, chat_history: "B".repeat(100 * 1024), cipherkey: "a2V5", iv: "aXY=",
            protocol: PROTOCOL, version: 1, request_id: id, cancel_token: "proof-" + id,
          }, { "X-Forwarded-For": address });
        try {
          const n = await q.register();
          const client = fakeKey("c");
          const admitted: string[] = [];
          for (let i = 0; i < 2; i++) {
            const id = rid();
            expect((await from("203.0.113.7", n.key, client, id)).status).toBe(200);
            admitted.push(id);
          }
          const refused = await from("203.0.113.7", n.key, client, rid());
          expect(refused).toMatchObject({ status: 429, body: { error: { code: "client_storage_full", scope: "client" } } });
          expect(refused.headers.get("retry-after")).toBe("5");
          // The flood took a quarter: another address (even for the same node and client key) goes on.
          for (let i = 0; i < 2; i++) expect((await from("203.0.113.8", n.key, client, rid())).status).toBe(200);
          // Room comes back as the first address's requests leave (here: answered and collected).
          await q.poll(n.key);
          await q.respond(client, admitted[0], { chat_history: "c21hbGw=" });
          expect((await q.retrieve(client, admitted[0])).status).toBe(200);
          expect((await from("203.0.113.7", n.key, client, rid())).status).toBe(200);
          const metrics = await (await small.get("/metrics")).text();
          expect(metrics).toMatch(/rejections_total\{reason="client_storage_full"\} 1\b/);
        } finally {
          await small.shutdown();
        }
      });

      test("the per-node queue bound answers 429 queue_full", async () => {
        const small = startV1Relay({ TOKEN_PLACE_API_V1_MAX_QUEUE_DEPTH_PER_NODE: "2" }, backend);
        const q = v1Peers(small);
        try {
          const node = await q.register();
          for (let i = 0; i < 2; i++) expect((await q.request(node.key, fakeKey("c"), rid())).status).toBe(200);
          expect(await q.request(node.key, fakeKey("c"), rid())).toMatchObject({ status: 429, body: { error: { code: "queue_full" } } });
        } finally {
          await small.shutdown();
        }
      });
    });

    describe("requests/cancel", () => {
      test("queued: removed_from_queue 1; status and reason kept from the allow lists", async () => {
        const node = await p.register();
        const client = fakeKey("c");
        const id = rid();
        await p.request(node.key, client, id);
        const r = await p.cancel(client, id, undefined, { status: "expired", reason: "client_timeout" });
        expect(r).toMatchObject({ status: 200, body: { status: "expired", request_id: id, removed_from_queue: 1 } });
        expect((await p.retrieve(client, id)).body.error).toEqual({ message: "Request expired", code: "expired", status: "expired", reason: "client_timeout" });
        const other = rid();
        await p.request(node.key, client, other);
        await p.cancel(client, other, undefined, { status: "weird", reason: "because" });
        expect((await p.retrieve(client, other)).body.error).toMatchObject({ status: "cancelled", reason: "cancelled" });
        expect((await p.poll(node.key)).body.message).toBe("No requests available");
      });

      test("403 without the right proof; 400 without the pair", async () => {
        const node = await p.register();
        const client = fakeKey("c");
        const id = rid();
        await p.request(node.key, client, id);
        const forbidden = { error: { message: "Missing or invalid cancel proof", code: 403 } };
        expect(await p.cancel(client, id, "wrong")).toMatchObject({ status: 403, body: forbidden });
        expect(await p.cancel(client, id, "")).toMatchObject({ status: 403, body: forbidden });
        expect(await p.call("requests/cancel", { client_public_key: client })).toMatchObject({ status: 400 });
      });

      test("400 field_too_long naming an over-long key or id", async () => {
        for (const [field, body] of [
          ["client_public_key", { client_public_key: "k".repeat(8193), request_id: rid(), cancel_token: "t" }],
          ["request_id", { client_public_key: fakeKey("c"), request_id: "r".repeat(257), cancel_token: "t" }],
        ] as const) {
          expect(await p.call("requests/cancel", body)).toMatchObject({ status: 400, body: { error: { code: "field_too_long", field } } });
        }
      });
    });

    describe("responses", () => {
      test("accepted once; a duplicate keeps the first; server_public_key is refused", async () => {
        const { client, id } = await inFlight();
        expect(await p.respond(client, id)).toMatchObject({ status: 200, body: { message: "Response received and queued for client" } });
        expect(await p.respond(client, id, { chat_history: "b3RoZXI=" })).toMatchObject({ status: 200, body: { message: "Response already queued for client" } });
        expect((await p.retrieve(client, id)).body.chat_history).toBe("YW5zd2Vy");
        expect(await p.respond(client, id)).toMatchObject({ status: 410, body: { error: { message: "Request is no longer waiting for a response", code: "completed", status: "completed" } } });
        expect(await p.respond(client, rid(), { server_public_key: "k" })).toMatchObject({ status: 400, body: { error: { code: 400 } } });
        expect(await p.respond(client, rid(), { text: "plain" })).toMatchObject({ status: 400 });
      });

      test("410 for cancelled and unknown (gone) requests; 401 without token", async () => {
        const { client, id } = await inFlight();
        await p.cancel(client, id);
        expect(await p.respond(client, id)).toMatchObject({ status: 410, body: { error: { code: "cancelled", status: "cancelled" } } });
        expect(await p.respond(client, rid())).toMatchObject({ status: 410, body: { error: { code: "gone", status: "gone" } } });
        expect((await relay.post("/api/v1/relay/responses", { client_public_key: client })).status).toBe(401);
      });
    });

    describe("progress", () => {
      test("202 for the owner of in-flight work; the client reads it once, on its pending retrieve", async () => {
        const { node, client, id } = await inFlight();
        expect(await p.progress(node.key, node.credential, client, id)).toMatchObject({ status: 202, body: { message: "Encrypted progress accepted" } });
        const r = await p.retrieve(client, id);
        expect(r.status).toBe(202);
        expect(r.body.encrypted_progress).toEqual({ client_public_key: client, request_id: id, protocol: PROTOCOL, version: 1, ciphertext: "cHJvZw==", cipherkey: "cGs=", iv: "cGk=" });
        expect((await p.retrieve(client, id)).body.encrypted_progress).toBeUndefined();
      });

      test("error order: 413, then 401, then schema, protocol, envelope, 403, 410", async () => {
        const { node, client, id } = await inFlight();
        const big = await relay.post("/api/v1/relay/progress", JSON.stringify({ pad: "x".repeat(17_000) }));
        expect(big.status).toBe(413);
        expect(await big.json()).toEqual({ error: { message: "Progress envelope too large", code: 413 } });
        expect((await relay.post("/api/v1/relay/progress", {})).status).toBe(401);
        const msg = async (extra: Json) => (await p.progress(node.key, node.credential, client, id, extra)).body.error;
        expect(await msg({ extra: 1 })).toEqual({ message: "Invalid encrypted progress schema", code: 400 });
        expect(await msg({ version: 2 })).toEqual({ message: "Invalid encrypted progress protocol", code: 400 });
        expect(await msg({ iv: "" })).toEqual({ message: "Invalid encrypted progress envelope", code: 400 });
        expect(await msg({ control_credential: "wrong" })).toEqual({ message: "Missing or invalid relay server control credential", code: 403 });
        expect(await msg({ request_id: "other" })).toEqual({ message: "Progress request is not active for this owner", code: 410 });
      });
    });

    describe("responses/retrieve", () => {
      test("202 pending while queued, 200 once answered, then 404", async () => {
        const node = await p.register();
        const client = fakeKey("c");
        const id = rid();
        await p.request(node.key, client, id);
        expect(await p.retrieve(client, id)).toMatchObject({ status: 202, body: { status: "pending", request_deadline_remaining_seconds: 480, request_ttl_seconds: 480 } });
        await p.poll(node.key);
        await p.respond(client, id);
        const r = await p.retrieve(client, id);
        expect(r.status).toBe(200);
        expect(r.body).toEqual({ client_public_key: client, chat_history: "YW5zd2Vy", cipherkey: "a2V5Mg==", iv: "aXYy", request_id: id, protocol: PROTOCOL, version: 1 });
        expect(await p.retrieve(client, id)).toMatchObject({ status: 404, body: { error: { message: `Unknown request_id: ${id}`, code: 404 } } });
      });

      test("without request_id: the oldest answer for the key, then 404", async () => {
        const client = fakeKey("c");
        await p.respond(client, undefined, { request_id: undefined });
        expect((await p.retrieve(client)).status).toBe(200);
        expect(await p.retrieve(client)).toMatchObject({ status: 404, body: { error: { message: "No response available for the given public key", code: 404 } } });
      });

      test("without request_id nobody can take an answer to a tracked request (the client key is public)", async () => {
        const { client, id } = await inFlight();
        await p.respond(client, id);
        expect((await p.retrieve(client)).status).toBe(404);
        expect((await p.retrieve(client, id)).status).toBe(200);
      });

      test("400 field_too_long naming an over-long key or id", async () => {
        expect(await p.call("responses/retrieve", { client_public_key: "k".repeat(8193), request_id: rid() })).toMatchObject({
          status: 400,
          body: { error: { code: "field_too_long", field: "client_public_key" } },
        });
        expect(await p.call("responses/retrieve", { client_public_key: fakeKey("c"), request_id: "r".repeat(257) })).toMatchObject({
          status: 400,
          body: { error: { code: "field_too_long", field: "request_id" } },
        });
      });

      test("400 for bodies without a client key (a bare string included)", async () => {
        for (const body of ['"client_public_key"', "{}", "[]", "{bad"]) {
          expect(await p.call("responses/retrieve", body)).toMatchObject({ status: 400, body: { error: { message: "Invalid request data", code: 400 } } });
        }
      });

      test("deadline passes while queued: 410 expired, pending_request_ttl_exceeded", async () => {
        const node = await p.register();
        const client = fakeKey("c");
        const id = rid();
        await p.request(node.key, client, id);
        relay.clock.advance(480_000);
        expect((await p.retrieve(client, id)).body.error).toEqual({ message: "Request expired", code: "expired", status: "expired", reason: "pending_request_ttl_exceeded" });
      });
    });

    describe("leases", () => {
      test("a node silent past its lease is evicted: 404 on poll, then a fresh credential", async () => {
        const node = await p.register();
        relay.clock.advance(30_001);
        await relay.v1Store.sweep();
        expect((await p.poll(node.key)).status).toBe(404);
        expect((await p.control(node.key, node.credential, "x")).status).toBe(403);
        const again = await p.register(node.key);
        expect(again.credential).not.toBe(node.credential);
      });
    });

    describe("operator and fail-closed routes", () => {
      test("meta and version: release metadata, no-store", async () => {
        for (const path of ["/api/v1/meta", "/api/v1/version"]) {
          const res = await relay.get(path);
          expect(res.status).toBe(200);
          expect(res.headers.get("cache-control")).toBe("no-store");
          expect(await res.json()).toMatchObject({ environment: expect.any(String), version: expect.any(String), label: expect.any(String) });
        }
      });

      test("diagnostics: nodes with load, no-store", async () => {
        const res = await relay.get("/relay/diagnostics");
        expect(res.headers.get("cache-control")).toBe("no-store");
        const body = (await res.json()) as Json;
        expect(body.total_api_v1_registered_compute_nodes).toBe(body.api_v1_registered_compute_nodes.length);
        expect(body.relay_only).toBe(true);
      });

      test("operator unregister: 401 with a wrong token, 200 with the header or a Bearer token", async () => {
        const node = await p.register();
        const path = "/api/v1/relay/unregister";
        const wrong = await relay.post(path, { server_public_key: node.key }, { "X-Token-Place-Operator": "nope" });
        expect(wrong.status).toBe(401);
        expect(((await wrong.json()) as Json).error.code).toBe("operator_token_invalid");
        const ok = await relay.post(path, { server_public_key: node.key }, { Authorization: "Bearer operator-token-0123456789" });
        expect(await ok.json()).toEqual({ message: "Server unregistered", removed: true });
        const again = await relay.post(path, { server_public_key: node.key }, { "X-Token-Place-Operator": "operator-token-0123456789" });
        expect(await again.json()).toEqual({ message: "Server unregistered", removed: false });
      });

      test("plaintext relay paths stay closed", async () => {
        for (const path of ["/relay/api/v1/chat/completions", "/relay/api/v1/source"]) {
          const res = await relay.post(path, {});
          expect(res.status).toBe(503);
          expect(((await res.json()) as Json).error.code).toBe("distributed_api_v1_relay_disabled");
        }
      });
    });

    describe("HTTP surface", () => {
      test("CORS preflight on client routes only", async () => {
        for (const path of ["servers/next", "requests", "requests/cancel", "responses/retrieve"]) {
          const res = await fetch(`${relay.url}/api/v1/relay/${path}`, { method: "OPTIONS" });
          expect(res.status).toBe(204);
          expect(res.headers.get("access-control-allow-methods")).toBe("GET, POST, OPTIONS");
          expect(res.headers.get("access-control-allow-headers")).toBe("Content-Type, Accept");
          expect(res.headers.get("access-control-max-age")).toBe("600");
        }
        const node = await fetch(`${relay.url}/api/v1/relay/servers/poll`, { method: "OPTIONS" });
        expect(node.status).toBe(405);
        expect(node.headers.get("access-control-allow-origin")).toBeNull();
      });

      test("unknown paths under /api/v1/relay/ are the relay's JSON 404; wrong methods 405", async () => {
        const res = await relay.get("/api/v1/relay/servers/unknown");
        expect(res.status).toBe(404);
        expect(res.headers.get("content-type")).toContain("application/json");
        const wrong = await relay.get("/api/v1/relay/requests");
        expect(wrong.status).toBe(405);
        expect(wrong.headers.get("allow")).toBe("POST");
      });

      test("X-Request-Id on every answer", async () => {
        const res = await fetch(`${relay.url}/api/v1/relay/servers/next`, { headers: { "X-Request-Id": "trace-123" } });
        expect(res.headers.get("x-request-id")).toBe("trace-123");
      });
    });
  });
}
