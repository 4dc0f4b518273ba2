import { describe, expect, test } from "bun:test";
import { fakeKey, job } from "../helpers/relay.ts";
import { BROKER_BACKENDS, startBrokerRelay } from "./backends.ts";

// Every bound refuses explicitly with a JSON body and a counted reason: never a silent drop.
const reasonCount = async (relay: { get(p: string): Promise<Response> }, reason: string) => {
  const text = await (await relay.get("/metrics")).text();
  const line = text.split("\n").find((l) => l.startsWith(`tokenplace_relay_rejections_total{reason="${reason}"}`));
  return line ? Number(line.split(" ").pop()) : 0;
};

for (const backend of BROKER_BACKENDS) {
  const why = backend.unavailable?.();
  describe.skipIf(why !== undefined)(`limits: ${backend.name}`, () => {
    test("per-node queue depth: 429 JSON once full, nothing already queued is lost", async () => {
      const relay = await startBrokerRelay(backend, { RELAY_LONG_POLL_MS: "0", RELAY_MAX_QUEUE_DEPTH: "3", RELAY_MAX_BATCH_SIZE: "3" });
      try {
        const key = fakeKey();
        await relay.post("/sink", { server_public_key: key });
        for (let i = 0; i < 3; i++) expect((await relay.post("/faucet", job(key, { chat_history: `h${i}` }))).status).toBe(200);
        const full = await relay.post("/faucet", job(key, { chat_history: "overflow" }));
        expect(full.status).toBe(429);
        expect(full.headers.get("retry-after")).toBe("5");
        expect(await full.json()).toEqual({
          error: { message: "The job queue for this server is full; retry later", code: 429, type: "queue_full" },
        });
        const got = (await (await relay.post("/sink", { server_public_key: key, max_batch_size: 10 })).json()) as { batch: { chat_history: string }[] };
        expect(got.batch.map((j) => j.chat_history)).toEqual(["h0", "h1", "h2"]);
        expect(await reasonCount(relay, "queue_full")).toBe(1);
      } finally {
        await relay.shutdown();
      }
    });

    test("max_batch_size above RELAY_MAX_BATCH_SIZE is clamped, not refused", async () => {
      const relay = await startBrokerRelay(backend, { RELAY_LONG_POLL_MS: "0", RELAY_MAX_BATCH_SIZE: "2" });
      try {
        const key = fakeKey();
        await relay.post("/sink", { server_public_key: key });
        for (let i = 0; i < 3; i++) await relay.post("/faucet", job(key));
        const got = (await (await relay.post("/sink", { server_public_key: key, max_batch_size: 50 })).json()) as { batch: unknown[] };
        expect(got.batch).toHaveLength(2);
      } finally {
        await relay.shutdown();
      }
    });

    test("registered nodes, pending answers and stream sessions are bounded with 503 JSON", async () => {
      const relay = await startBrokerRelay(backend, { RELAY_LONG_POLL_MS: "0", RELAY_MAX_NODES: "2", RELAY_MAX_ANSWERS: "1", RELAY_MAX_STREAM_SESSIONS: "1" });
      try {
        const [a, b, c] = [fakeKey(), fakeKey(), fakeKey()];
        await relay.post("/sink", { server_public_key: a });
        await relay.post("/sink", { server_public_key: b });
        const third = await relay.post("/sink", { server_public_key: c });
        expect(third.status).toBe(503);
        expect(third.headers.get("retry-after")).toBe("5");
        expect(((await third.json()) as { error: { type: string } }).error.type).toBe("nodes_full");
        // A known node still polls fine.
        expect((await relay.post("/sink", { server_public_key: a })).status).toBe(200);

        const answer = { chat_history: "h", cipherkey: "k", iv: "v" };
        expect((await relay.post("/source", { client_public_key: "c1", ...answer })).status).toBe(200);
        const refused = await relay.post("/source", { client_public_key: "c2", ...answer });
        expect(refused.status).toBe(503);
        expect(refused.headers.get("retry-after")).toBe("5");
        expect(((await refused.json()) as { error: { type: string } }).error.type).toBe("answers_full");
        // Replacing the same client's slot is not growth.
        expect((await relay.post("/source", { client_public_key: "c1", ...answer })).status).toBe(200);

        await relay.post("/faucet", job(a, { stream: true, client_public_key: "s1" }));
        await relay.post("/sink", { server_public_key: a });
        const streams = await relay.post("/faucet", job(a, { stream: true, client_public_key: "s2" }));
        expect(streams.status).toBe(503);
        expect(streams.headers.get("retry-after")).toBe("5");
        expect(((await streams.json()) as { error: { type: string } }).error.type).toBe("stream_sessions_full");
        for (const reason of ["nodes_full", "answers_full", "stream_sessions_full"]) expect(await reasonCount(relay, reason)).toBe(1);
      } finally {
        await relay.shutdown();
      }
    });

    test("chunks per stream session are bounded with 429 JSON", async () => {
      const relay = await startBrokerRelay(backend, { RELAY_LONG_POLL_MS: "0", RELAY_MAX_STREAM_CHUNKS: "2" });
      try {
        const node = fakeKey();
        await relay.post("/sink", { server_public_key: node });
        await relay.post("/faucet", job(node, { stream: true, client_public_key: "cl" }));
        const { stream_session_id: sid } = (await (await relay.post("/sink", { server_public_key: node })).json()) as { stream_session_id: string };
        expect((await relay.post("/stream/source", { session_id: sid, chunk: 1 })).status).toBe(200);
        expect((await relay.post("/stream/source", { session_id: sid, chunk: 2 })).status).toBe(200);
        const over = await relay.post("/stream/source", { session_id: sid, chunk: 3 });
        expect(over.status).toBe(429);
        // A session's chunk cap does not clear by waiting: no Retry-After.
        expect(over.headers.get("retry-after")).toBeNull();
        expect(((await over.json()) as { error: { type: string } }).error.type).toBe("stream_chunks_full");
        // Draining makes room again.
        await relay.post("/stream/retrieve", { client_public_key: "cl" });
        expect((await relay.post("/stream/source", { session_id: sid, chunk: 3 })).status).toBe(200);
      } finally {
        await relay.shutdown();
      }
    });

    test("oversize bodies: JSON 413 by Content-Length and by counting a chunked body", async () => {
      const relay = await startBrokerRelay(backend, { RELAY_LONG_POLL_MS: "0", RELAY_MAX_BODY_BYTES: "2048" });
      try {
        const big = JSON.stringify(job(fakeKey(), { chat_history: "x".repeat(4096) }));
        const byLength = await relay.post("/faucet", big);
        expect(byLength.status).toBe(413);
        expect(await byLength.json()).toEqual({
          error: { message: "Request body exceeds the limit of 2048 bytes", code: 413, type: "body_too_large" },
        });
        const chunked = new ReadableStream<Uint8Array>({
          start(c) {
            for (let i = 0; i < 8; i++) c.enqueue(new TextEncoder().encode("y".repeat(512)));
            c.close();
          },
        });
        const byCount = await fetch(relay.url + "/source", { method: "POST", body: chunked, duplex: "half" } as RequestInit);
        expect(byCount.status).toBe(413);
        expect(((await byCount.json()) as { error: { type: string } }).error.type).toBe("body_too_large");
        // Far above the limit, still the relay's JSON 413 (not Bun's empty one), with a request id.
        const huge = await relay.post("/faucet", "x".repeat(200 * 1024));
        expect(huge.status).toBe(413);
        expect(huge.headers.get("x-request-id")).toBeTruthy();
        expect(((await huge.json()) as { error: { type: string } }).error.type).toBe("body_too_large");
        expect(await reasonCount(relay, "body_too_large")).toBe(3);
        // The relay is still fine afterwards.
        expect((await relay.get("/livez")).status).toBe(200);
      } finally {
        await relay.shutdown();
      }
    });
  });
}
