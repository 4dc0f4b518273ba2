import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { ManualClock } from "../../src/clock.ts";
import { fakeKey, job, type TestRelay } from "../helpers/relay.ts";
import { BROKER_BACKENDS, startBrokerRelay } from "./backends.ts";

for (const backend of BROKER_BACKENDS) {
  const why = backend.unavailable?.();
  describe.skipIf(why !== undefined)(`legacy expiry: ${backend.name}`, () => {
    // Expiry is decided by the injected clock: no sleeping, exact boundaries.
    const clock = new ManualClock();
    let relay: TestRelay;
    beforeAll(async () => {
      relay = await startBrokerRelay(
        backend,
        { RELAY_LONG_POLL_MS: "0", RELAY_NODE_STALE_MS: "30000", RELAY_JOB_TTL_MS: "120000", RELAY_ANSWER_TTL_MS: "60000", RELAY_STREAM_TTL_MS: "60000" },
        { clock },
      );
    });
    afterAll(() => relay.shutdown());

    const metric = async (line: string) => {
      const text = await (await relay.get("/metrics")).text();
      const found = text.split("\n").find((l) => l.startsWith(line + " "));
      return found ? Number(found.split(" ").pop()) : 0;
    };

    describe("stale nodes and queued jobs", () => {
      test("a node silent past the stale timeout leaves /next_server and gets no new jobs", async () => {
        const key = fakeKey();
        await relay.post("/sink", { server_public_key: key });
        clock.advance(30_000);
        expect(await (await relay.get("/next_server")).json()).toEqual({ server_public_key: key });
        clock.advance(1);
        expect(await (await relay.get("/next_server")).json()).toEqual({ error: { message: "No servers available", code: 503 } });
        expect((await relay.post("/faucet", job(key))).status).toBe(404);
      });

      test("a node busy past the stale timeout finds the jobs queued for it when it polls again", async () => {
        const key = fakeKey();
        await relay.post("/sink", { server_public_key: key });
        await relay.post("/faucet", job(key, { chat_history: "first" }));
        await relay.post("/faucet", job(key, { chat_history: "second" }));
        // The node takes one job and spends 45 s generating the answer, without polling.
        expect(((await (await relay.post("/sink", { server_public_key: key })).json()) as { chat_history: string }).chat_history).toBe("first");
        clock.advance(45_000);
        expect((await relay.post("/faucet", job(key))).status).toBe(404);
        const back = (await (await relay.post("/sink", { server_public_key: key })).json()) as { chat_history: string };
        expect(back.chat_history).toBe("second");
        expect(await (await relay.get("/next_server")).json()).toEqual({ server_public_key: key });
      });

      test("queued jobs expire after RELAY_JOB_TTL_MS, counted, and are not replayed", async () => {
        const key = fakeKey();
        await relay.post("/sink", { server_public_key: key });
        await relay.post("/faucet", job(key));
        await relay.post("/faucet", job(key));
        const before = await metric('tokenplace_relay_expired_total{kind="job"}');
        clock.advance(120_001);
        expect(await metric('tokenplace_relay_expired_total{kind="job"}')).toBe(before); // not yet
        await relay.store.sweep();
        expect(await metric('tokenplace_relay_expired_total{kind="job"}')).toBe(before + 2);
        expect(await (await relay.post("/sink", { server_public_key: key })).json()).toEqual({ next_ping_in_x_seconds: 10 });
      });

      test("a stale node with nothing queued is forgotten by the sweep", async () => {
        const own = new ManualClock();
        const solo = await startBrokerRelay(backend, { RELAY_LONG_POLL_MS: "0", RELAY_NODE_STALE_MS: "30000" }, { clock: own });
        try {
          await solo.post("/sink", { server_public_key: fakeKey() });
          own.advance(30_001);
          await solo.store.sweep();
          const text = await (await solo.get("/metrics")).text();
          expect(text).toContain('tokenplace_relay_expired_total{kind="node"} 1');
          expect(text).not.toContain('tokenplace_relay_expired_total{kind="job"}');
        } finally {
          await solo.shutdown();
        }
      });

      test("polling keeps a node fresh", async () => {
        const key = fakeKey();
        for (let i = 0; i < 5; i++) {
          await relay.post("/sink", { server_public_key: key });
          clock.advance(20_000);
        }
        expect((await relay.post("/faucet", job(key))).status).toBe(200);
      });
    });

    describe("answers and stream sessions", () => {
      test("an uncollected answer expires after its TTL", async () => {
        const client = fakeKey("client");
        await relay.post("/source", { client_public_key: client, chat_history: "h", cipherkey: "k", iv: "v" });
        clock.advance(60_001);
        expect(await (await relay.post("/retrieve", { client_public_key: client })).json()).toEqual({
          error: "No response available for the given public key",
        });
      });

      test("an idle stream session expires; chunks keep it alive", async () => {
        const node = fakeKey();
        const client = fakeKey("client");
        await relay.post("/sink", { server_public_key: node });
        await relay.post("/faucet", job(node, { stream: true, client_public_key: client }));
        const { stream_session_id: sid } = (await (await relay.post("/sink", { server_public_key: node })).json()) as { stream_session_id: string };
        for (let i = 0; i < 3; i++) {
          clock.advance(50_000);
          expect((await relay.post("/stream/source", { session_id: sid, chunk: `c${i}` })).status).toBe(200);
        }
        clock.advance(60_001);
        expect((await relay.post("/stream/source", { session_id: sid, chunk: "late" })).status).toBe(404);
        expect(await (await relay.post("/stream/retrieve", { client_public_key: client })).json()).toEqual({
          error: "No active stream for the given public key",
        });
        expect(await metric('tokenplace_relay_expired_total{kind="stream"}')).toBeGreaterThanOrEqual(1);
      });

      test("the periodic sweep drops expired state even when nobody asks again", async () => {
        const client = fakeKey("client");
        await relay.post("/source", { client_public_key: client, chat_history: "h", cipherkey: "k", iv: "v" });
        const before = (await relay.store.stats()).answers;
        clock.advance(60_001);
        await relay.store.sweep();
        expect((await relay.store.stats()).answers).toBe(before - 1);
      });
    });
  });
}
