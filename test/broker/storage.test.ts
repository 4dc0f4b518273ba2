// The byte budget (maxStoredBytes, the legacy protocol's share of RELAY_MEMORY_BUDGET_BYTES) and a
// node's share of it, in every store: what counts, when it is released, and how a refusal looks.
import { describe, expect, test } from "bun:test";
import { NODE_STORED_BYTES_DIVISOR, answerBytes, jobBytes } from "../../src/broker/bytes.ts";
import type { BrokerStore, ExpiredKind, Job } from "../../src/broker/types.ts";
import { ManualClock } from "../../src/clock.ts";
import { LEGACY_ON, fakeKey, job, testConfig } from "../helpers/relay.ts";
import { BROKER_BACKENDS, startBrokerRelay } from "./backends.ts";

const reasonCount = async (relay: { get(p: string): Promise<Response> }, reason: string) => {
  const text = await (await relay.get("/metrics")).text();
  const line = text.split("\n").find((l) => l.startsWith(`tokenplace_relay_rejections_total{reason="${reason}"}`));
  return line ? Number(line.split(" ").pop()) : 0;
};

/** A job or answer whose stored size is exactly `bytes` ("k" and "v" take two of them). */
const sizedJob = (bytes: number, extra: Partial<Job> = {}): Job => ({ chat_history: "x".repeat(bytes - 2), cipherkey: "k", iv: "v", ...extra });
const sizedAnswer = (bytes: number) => ({ chat_history: "a".repeat(bytes - 2), cipherkey: "k", iv: "v" });

const MiB = 1024 * 1024;

for (const backend of BROKER_BACKENDS) {
  const why = backend.unavailable?.();
  describe.skipIf(why !== undefined)(`stored bytes: ${backend.name}`, () => {
    async function make(limits: Record<string, number>) {
      const clock = new ManualClock();
      const expired: Record<ExpiredKind, number> = { node: 0, job: 0, answer: 0, stream: 0 };
      const store = await backend.make(clock, (k, n) => (expired[k] += n), {
        nodeStaleMs: 30_000, jobTtlMs: 60_000, answerTtlMs: 60_000, streamTtlMs: 60_000, maxQueueDepth: 10, ...limits,
      });
      return { store, clock, expired };
    }
    const held = async (store: BrokerStore) => (await store.stats()).storedBytes;

    test("sizes: a job's ciphertext and client key, an answer's ciphertext, a chunk's JSON", () => {
      expect(jobBytes({ chat_history: "abc", cipherkey: "de", iv: "f" })).toBe(6);
      expect(jobBytes({ chat_history: "abc", cipherkey: "de", iv: "f", client_public_key: "ck", stream: true })).toBe(8);
      expect(answerBytes({ chat_history: "abc", cipherkey: "de", iv: "f" })).toBe(6);
    });

    test("each payload counts from when it is stored until it leaves, however it leaves", async () => {
      const { store, clock } = await make({ maxStoredBytes: 100_000 });
      try {
        await store.touchNode("n1");
        expect(await store.enqueueJob("n1", sizedJob(500, { client_public_key: "c1" }))).toBe("queued"); // 500 + 2
        expect(await store.enqueueJob("n1", sizedJob(300))).toBe("queued");
        expect(await held(store)).toBe(802);
        await store.takeJobs("n1", 1); // taken
        expect(await held(store)).toBe(300);

        expect(await store.putAnswer("c1", sizedAnswer(400))).toBe("stored");
        expect(await held(store)).toBe(700);
        expect(await store.putAnswer("c1", sizedAnswer(40))).toBe("stored"); // replaced: only the new size counts
        expect(await held(store)).toBe(340);
        await store.takeAnswer("c1"); // delivered
        expect(await held(store)).toBe(300);

        await store.openStream("c2", "s1");
        expect((await store.pushChunk("s1", { t: "y".repeat(100) }, false)).kind).toBe("stored"); // {"t":"yy..."}: 108
        expect((await store.pushChunk("s1", 42, false)).kind).toBe("stored"); // 2
        expect(await held(store)).toBe(410);
        await store.drainStream("c2"); // drained
        expect(await held(store)).toBe(300);
        expect((await store.pushChunk("s1", "z".repeat(48), false)).kind).toBe("stored"); // "zz...": 50
        await store.openStream("c2", "s2"); // the newer session replaces s1 and its undrained chunk
        expect(await held(store)).toBe(300);
        expect((await store.pushChunk("s2", "w".repeat(18), true)).kind).toBe("stored");
        expect(await held(store)).toBe(320);
        expect((await store.drainStream("c2"))?.final).toBe(true); // the final drain ends the session
        expect(await held(store)).toBe(300);

        expect(await store.putAnswer("c3", sizedAnswer(70))).toBe("stored");
        await store.openStream("c4", "s3");
        await store.pushChunk("s3", "q", false);
        expect(await held(store)).toBe(373);
        clock.advance(60_001); // the job, the answer and the session expire; n1 goes stale and empty
        expect(await held(store)).toBe(373); // expired payloads count until a prune or sweep takes them
        await store.sweep();
        expect(await store.stats()).toEqual({ nodes: 0, queuedJobs: 0, maxQueueDepth: 0, answers: 0, streams: 0, storedBytes: 0 });
      } finally {
        await store.close();
      }
    });

    test("an add past maxStoredBytes is refused, an exact fit is not; a node holds at most a quarter", async () => {
      expect(NODE_STORED_BYTES_DIVISOR).toBe(4);
      const { store } = await make({ maxStoredBytes: 1_000 });
      try {
        for (const n of ["n1", "n2", "n3", "n4", "n5"]) await store.touchNode(n);
        // A node's share: 250 bytes.
        expect(await store.enqueueJob("n1", sizedJob(200))).toBe("queued");
        expect(await store.enqueueJob("n1", sizedJob(51))).toBe("node_storage_full");
        expect(await store.enqueueJob("n1", sizedJob(50))).toBe("queued");
        expect(await store.enqueueJob("n1", sizedJob(2))).toBe("node_storage_full");
        expect(await store.enqueueJob("n5", sizedJob(251))).toBe("node_storage_full"); // never fits one node
        for (const n of ["n2", "n3"]) expect(await store.enqueueJob(n, sizedJob(250))).toBe("queued");
        expect(await store.putAnswer("c1", sizedAnswer(200))).toBe("stored");
        expect(await held(store)).toBe(950);
        // 50 left: the total refuses, whatever the kind; a node with room in its share too.
        expect(await store.enqueueJob("n4", sizedJob(51))).toBe("storage_full");
        expect(await store.putAnswer("c2", sizedAnswer(51))).toBe("storage_full");
        expect(await store.putAnswer("c1", sizedAnswer(251))).toBe("storage_full"); // replacing grows by 51
        await store.openStream("c3", "s1");
        expect(await store.pushChunk("s1", "z".repeat(50), false)).toEqual({ kind: "storage_full" }); // 52 with quotes
        expect(await held(store)).toBe(950);
        // Exactly full is allowed.
        expect(await store.pushChunk("s1", "z".repeat(48), false)).toMatchObject({ kind: "stored" });
        expect(await held(store)).toBe(1_000);
        expect(await store.putAnswer("c1", sizedAnswer(150))).toBe("stored"); // shrinking always fits
        expect(await held(store)).toBe(950);
        // What leaves makes room again.
        await store.takeJobs("n2", 5);
        expect(await store.enqueueJob("n4", sizedJob(250))).toBe("queued");
        expect(await held(store)).toBe(950);
        // The refusals stored nothing: the queues hold what was accepted.
        expect((await store.takeJobs("n1", 10)).map((j) => j.chat_history.length)).toEqual([198, 48]);
      } finally {
        await store.close();
      }
    });

    test("strings that are not plain base64 cost their size in memory and as UTF-8 JSON, so the budgets refuse them where their length would fit", async () => {
      const N = 2_000;
      const euroJob: Job = { chat_history: "€".repeat(N), cipherkey: "k", iv: "v" };
      expect(jobBytes(euroJob)).toBe(3 * N + 2); // 3 UTF-8 bytes each (2 in memory)
      expect(jobBytes({ chat_history: "é".repeat(N), cipherkey: "k", iv: "v", client_public_key: "ck" })).toBe(2 * N + 4);
      expect(answerBytes({ chat_history: "\u0001".repeat(N), cipherkey: "k", iv: "v" })).toBe(6 * N + 2); // "\u0001" in JSON
      expect(answerBytes({ chat_history: "𝄞".repeat(N / 2), cipherkey: '"', iv: "\ud800" })).toBe(2 * N + 2 + 6);
      const { store } = await make({ maxStoredBytes: 4 * (2 * N + 2) });
      try {
        await store.touchNode("n1");
        // The node's share is 2N + 2: by its length (N + 2) the job would fit.
        expect(await store.enqueueJob("n1", euroJob)).toBe("node_storage_full");
        expect(await store.enqueueJob("n1", sizedJob(2 * N + 2))).toBe("queued");
        expect(await held(store)).toBe(2 * N + 2);
        // 6N + 6 left.
        expect(await store.putAnswer("c1", { chat_history: "€".repeat(2 * N + 3), cipherkey: "k", iv: "v" })).toBe("storage_full");
        await store.openStream("c2", "s1");
        expect(await store.pushChunk("s1", "€".repeat(2 * N + 2), false)).toEqual({ kind: "storage_full" }); // JSON: 6N + 8 bytes
        expect(await store.pushChunk("s1", "z".repeat(2 * N + 2), false)).toMatchObject({ kind: "stored" });
        expect(await held(store)).toBe(4 * N + 6);
        expect(await store.pushChunk("s1", { t: "é".repeat(N) }, false)).toMatchObject({ kind: "stored" }); // {"t":"éé…"}: N + 8 characters at 2 bytes
        expect(await held(store)).toBe(6 * N + 22);
        expect((await store.drainStream("c2"))?.chunks).toEqual(["z".repeat(2 * N + 2), { t: "é".repeat(N) }]);
        expect(await held(store)).toBe(2 * N + 2);
      } finally {
        await store.close();
      }
    });

    test("at the budget, what has expired makes room first (one sweep, counted), as for the count bounds", async () => {
      const { store, clock, expired } = await make({ maxStoredBytes: 1_000, answerTtlMs: 10_000 });
      try {
        for (let i = 0; i < 4; i++) expect(await store.putAnswer(`c${i}`, sizedAnswer(250))).toBe("stored");
        expect(await store.putAnswer("late", sizedAnswer(100))).toBe("storage_full");
        clock.advance(10_001);
        expect(await store.putAnswer("late", sizedAnswer(100))).toBe("stored");
        expect(expired.answer).toBe(4);
        expect(await held(store)).toBe(100);
      } finally {
        await store.close();
      }
    });

    test("over HTTP: 429 node_storage_full, 503 storage_full with Retry-After, each counted; collected payloads make room", async () => {
      // The smallest budget, 96 MiB: 16 MiB for stored payloads, the legacy protocol's share 4 MiB,
      // a node's 1 MiB; bodies up to 1 MiB (the budget reads 2 MiB at once).
      const env = { RELAY_LONG_POLL_MS: "0", RELAY_MEMORY_BUDGET_BYTES: String(96 * MiB), RELAY_MAX_BODY_BYTES: String(MiB) };
      expect(testConfig({ ...LEGACY_ON, ...env }).broker.maxStoredBytes).toBe(4 * MiB);
      const relay = await startBrokerRelay(backend, env);
      try {
        const [a, b] = [fakeKey(), fakeKey()];
        const big = "x".repeat(600_000);
        await relay.post("/sink", { server_public_key: a });
        await relay.post("/sink", { server_public_key: b });
        // A stream session for later, opened while there is room.
        expect((await relay.post("/faucet", job(b, { stream: true, client_public_key: "streamer" }))).status).toBe(200);
        const { stream_session_id: sid } = (await (await relay.post("/sink", { server_public_key: b })).json()) as { stream_session_id: string };

        expect((await relay.post("/faucet", job(a, { chat_history: big }))).status).toBe(200);
        const nodeFull = await relay.post("/faucet", job(a, { chat_history: big }));
        expect(nodeFull.status).toBe(429);
        expect(nodeFull.headers.get("retry-after")).toBe("5");
        expect(await nodeFull.json()).toEqual({
          error: { message: "The job queue for this server holds as much data as it may; retry later", code: 429, type: "node_storage_full" },
        });

        // Answers fill the rest: 600 008 bytes each, six of them with the job pass 4 MiB.
        for (let i = 0; i < 5; i++) {
          expect((await relay.post("/source", { client_public_key: `c${i}`, chat_history: big, cipherkey: "a2V5", iv: "aXY=" })).status).toBe(200);
        }
        const full = await relay.post("/source", { client_public_key: "c5", chat_history: big, cipherkey: "a2V5", iv: "aXY=" });
        expect(full.status).toBe(503);
        expect(full.headers.get("retry-after")).toBe("5");
        expect(await full.json()).toEqual({
          error: { message: "The relay holds as much data as it may (RELAY_MEMORY_BUDGET_BYTES); retry later", code: 503, type: "storage_full" },
        });
        // Node b has its whole share, but the total is taken.
        const faucetFull = await relay.post("/faucet", job(b, { chat_history: big }));
        expect(faucetFull.status).toBe(503);
        expect(((await faucetFull.json()) as { error: { type: string } }).error.type).toBe("storage_full");
        const chunkFull = await relay.post("/stream/source", { session_id: sid, chunk: big });
        expect(chunkFull.status).toBe(503);
        expect(chunkFull.headers.get("retry-after")).toBe("5");
        expect(((await chunkFull.json()) as { error: { type: string } }).error.type).toBe("storage_full");
        expect(await reasonCount(relay, "node_storage_full")).toBe(1);
        expect(await reasonCount(relay, "storage_full")).toBe(3);

        // A client collects its answer: the chunk fits now, and the client drains it.
        expect(((await (await relay.post("/retrieve", { client_public_key: "c0" })).json()) as { chat_history: string }).chat_history).toBe(big);
        expect((await relay.post("/stream/source", { session_id: sid, chunk: big, final: true })).status).toBe(200);
        const drained = (await (await relay.post("/stream/retrieve", { client_public_key: "streamer" })).json()) as { chunks: string[]; final: boolean };
        expect(drained).toMatchObject({ chunks: [big], final: true });
        // Everything else collected: nothing held.
        expect(((await (await relay.post("/sink", { server_public_key: a })).json()) as { chat_history: string }).chat_history).toBe(big);
        for (let i = 1; i < 5; i++) expect((await relay.post("/retrieve", { client_public_key: `c${i}` })).status).toBe(200);
        expect((await relay.store.stats()).storedBytes).toBe(0);
      } finally {
        await relay.shutdown();
      }
    });
  });
}
