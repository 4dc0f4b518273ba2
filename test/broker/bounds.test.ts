/**
 * Bounds of the legacy protocol: field sizes (as API v1's), stream chunks (size, and nesting: a
 * deeply nested chunk used to be stored and then break every /stream/retrieve with a 500), and held
 * polls per client address.
 */
import { describe, expect, test } from "bun:test";
import { MAX_STREAM_CHUNK_CHARS } from "../../src/broker/validate.ts";
import { MAX_CIPHERKEY_CHARS, MAX_ID_CHARS, MAX_IV_CHARS, MAX_KEY_CHARS } from "../../src/v1/validate.ts";
import { fakeKey, job, type TestRelay } from "../helpers/relay.ts";
import { metricValue } from "../proxy/helpers.ts";
import { BROKER_BACKENDS, startBrokerRelay } from "./backends.ts";

const errorOf = async (res: Response) => ((await res.json()) as { error: Record<string, unknown> }).error;

/** A node with a stream session open for `client`; returns the session id. */
async function openSession(relay: TestRelay, client: string): Promise<string> {
  const node = fakeKey("node");
  await relay.post("/sink", { server_public_key: node });
  await relay.post("/faucet", job(node, { stream: true, client_public_key: client }));
  const taken = (await (await relay.post("/sink", { server_public_key: node })).json()) as { stream_session_id: string };
  return taken.stream_session_id;
}

for (const backend of BROKER_BACKENDS) {
  const why = backend.unavailable?.();
  describe.skipIf(why !== undefined)(`legacy bounds: ${backend.name}`, () => {
    test("a deeply nested chunk is refused at /stream/source (400 json_too_deep) and /stream/retrieve keeps working", async () => {
      const relay = await startBrokerRelay(backend, { RELAY_LONG_POLL_MS: "0" });
      try {
        const client = fakeKey("client");
        const sid = await openSession(relay, client);
        // 100,000 levels: JSON.parse took it, JSON.stringify of the stored chunk overflowed (500).
        const depth = 100_000;
        const res = await relay.post("/stream/source", `{"session_id":"${sid}","chunk":${"[".repeat(depth)}${"]".repeat(depth)}}`);
        expect(res.status).toBe(400);
        expect(await errorOf(res)).toMatchObject({ code: 400, type: "json_too_deep" });
        const drained = await relay.post("/stream/retrieve", { client_public_key: client });
        expect(drained.status).toBe(200);
        expect(await drained.json()).toEqual({ stream: true, session_id: sid, chunks: [], final: false });
        // A real chunk still goes through.
        expect((await relay.post("/stream/source", { session_id: sid, chunk: { ciphertext: "c", iv: "i" }, final: true })).status).toBe(200);
        expect(((await (await relay.post("/stream/retrieve", { client_public_key: client })).json()) as { chunks: unknown[] }).chunks).toEqual([
          { ciphertext: "c", iv: "i" },
        ]);
      } finally {
        await relay.shutdown();
      }
    });

    test("chunk size is bounded by its JSON text: 400 field_too_long naming chunk", async () => {
      const relay = await startBrokerRelay(backend, { RELAY_LONG_POLL_MS: "0" });
      try {
        const client = fakeKey("client");
        const sid = await openSession(relay, client);
        // A string chunk's JSON text is its length plus the two quotes.
        expect((await relay.post("/stream/source", { session_id: sid, chunk: "c".repeat(MAX_STREAM_CHUNK_CHARS - 2) })).status).toBe(200);
        const big = await relay.post("/stream/source", { session_id: sid, chunk: { client_public_key: client, chat_history: "c".repeat(MAX_STREAM_CHUNK_CHARS) } });
        expect(big.status).toBe(400);
        expect(await errorOf(big)).toEqual({
          message: `chunk is longer than ${MAX_STREAM_CHUNK_CHARS} characters`,
          code: 400,
          type: "field_too_long",
          field: "chunk",
          limit: MAX_STREAM_CHUNK_CHARS,
        });
      } finally {
        await relay.shutdown();
      }
    });

    test("keys, session ids, cipherkey and iv are bounded on every route, each refusal naming its field", async () => {
      const relay = await startBrokerRelay(backend, { RELAY_LONG_POLL_MS: "0" });
      try {
        const node = fakeKey("node");
        await relay.post("/sink", { server_public_key: node });
        const longKey = "k".repeat(MAX_KEY_CHARS + 1);
        const cases: [path: string, body: Record<string, unknown>, field: string, max: number][] = [
          ["/sink", { server_public_key: longKey }, "server_public_key", MAX_KEY_CHARS],
          ["/faucet", job(longKey), "server_public_key", MAX_KEY_CHARS],
          ["/faucet", job(node, { client_public_key: longKey }), "client_public_key", MAX_KEY_CHARS],
          ["/faucet", job(node, { cipherkey: "c".repeat(MAX_CIPHERKEY_CHARS + 1) }), "cipherkey", MAX_CIPHERKEY_CHARS],
          ["/faucet", job(node, { iv: "i".repeat(MAX_IV_CHARS + 1) }), "iv", MAX_IV_CHARS],
          ["/source", { client_public_key: longKey, chat_history: "h", cipherkey: "k", iv: "v" }, "client_public_key", MAX_KEY_CHARS],
          ["/source", { client_public_key: "c", chat_history: "h", cipherkey: "k".repeat(MAX_CIPHERKEY_CHARS + 1), iv: "v" }, "cipherkey", MAX_CIPHERKEY_CHARS],
          ["/retrieve", { client_public_key: longKey }, "client_public_key", MAX_KEY_CHARS],
          ["/stream/source", { session_id: "s".repeat(MAX_ID_CHARS + 1), chunk: "c" }, "session_id", MAX_ID_CHARS],
          ["/stream/retrieve", { client_public_key: longKey }, "client_public_key", MAX_KEY_CHARS],
        ];
        for (const [path, body, field, max] of cases) {
          const res = await relay.post(path, body);
          expect({ path, status: res.status }).toEqual({ path, status: 400 });
          expect(await errorOf(res)).toMatchObject({ type: "field_too_long", field, limit: max });
        }
        // At the bound itself everything is accepted.
        const atBound = "k".repeat(MAX_KEY_CHARS);
        expect((await relay.post("/sink", { server_public_key: atBound })).status).toBe(200);
        expect((await relay.post("/faucet", job(atBound, { client_public_key: atBound, cipherkey: "c".repeat(MAX_CIPHERKEY_CHARS), iv: "i".repeat(MAX_IV_CHARS) }))).status).toBe(200);
        const text = await relay.metrics.registry.metrics();
        expect(metricValue(text, "tokenplace_relay_rejections_total", { reason: "field_too_long" })).toBe(cases.length);
      } finally {
        await relay.shutdown();
      }
    });

    test("held polls per client address (RELAY_MAX_HOLDS_PER_IP): beyond it nodes answer at once and clients are paced, counted; nodes and clients apart", async () => {
      const relay = await startBrokerRelay(backend, { RELAY_LONG_POLL_MS: "1500", RELAY_MAX_HOLDS_PER_IP: "2" });
      try {
        const held = [fakeKey("c"), fakeKey("c")].map((k) => relay.post("/retrieve", { client_public_key: k }));
        const nodes = [fakeKey("n"), fakeKey("n")].map((k) => relay.post("/sink", { server_public_key: k }));
        const end = Date.now() + 2_000;
        while (relay.app.holds.waiting < 4 && Date.now() < end) await Bun.sleep(5);
        // Both budgets hold their two: the client side's share does not eat the nodes'.
        expect(relay.app.holds.waiting).toBe(4);

        const t0 = performance.now();
        const thirdNode = await relay.post("/sink", { server_public_key: fakeKey("n") });
        // Not held: told to come back after the usual pace rather than at once.
        expect(await thirdNode.json()).toEqual({ next_ping_in_x_seconds: 10 });
        expect(performance.now() - t0).toBeLessThan(1_000);
        // Not held either, but a client reads no next_ping: its usual "none yet" comes a second late.
        const t1 = performance.now();
        const third = await relay.post("/retrieve", { client_public_key: fakeKey("c") });
        expect(await third.json()).toEqual({ error: "No response available for the given public key" });
        expect(third.headers.get("retry-after")).toBe("1");
        expect(performance.now() - t1).toBeGreaterThanOrEqual(950);

        const text = await relay.metrics.registry.metrics();
        expect(metricValue(text, "tokenplace_relay_rejections_total", { reason: "long_poll_per_ip_client" })).toBe(1);
        expect(metricValue(text, "tokenplace_relay_rejections_total", { reason: "long_poll_per_ip" })).toBe(1);
        expect(metricValue(text, "tokenplace_relay_long_poll_outcomes_total", { outcome: "ip_limit" })).toBe(2);
        await Promise.all([...held, ...nodes]);
        // The slots came back with the holds.
        expect(relay.app.holds.waiting).toBe(0);
      } finally {
        await relay.shutdown();
      }
    });
  });
}
