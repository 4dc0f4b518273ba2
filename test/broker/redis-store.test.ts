// What the Redis backend guarantees beyond the shared suites: keys and TTLs in the datastore
// itself, bounds under a flood, bounded sweeps, one transition per item across replicas.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type Redis from "ioredis";
import { RedisBrokerStore, type BrokerStoreLimits } from "../../src/broker/redis/index.ts";
import { TOUCH_REUSE_MS } from "../../src/broker/redis/nodes.ts";
import { BACKSTOP_GRACE_MS, hashKey as hashKeyOf } from "../../src/broker/redis/shared.ts";
import type { ExpiredKind, Job } from "../../src/broker/types.ts";
import { ManualClock, type Clock } from "../../src/clock.ts";
import { RelayError } from "../../src/errors.ts";
import { connectRedis, whenReady } from "../../src/state/redis.ts";
import { redisSkipReason } from "../helpers/redis.ts";
import { fakeKey, startLegacyRelay } from "../helpers/relay.ts";
import { COMMAND_TIMEOUT_MS, TEST_LIMITS, redisClient, uniquePrefix } from "./backends.ts";

const INDEXES = ["nodes", "nodes:due", "answers", "streams", "nodes:bytes", "answers:bytes", "streams:bytes", "bytes"];
/**
 * The expiry index: the four zsets, the sizes of what they index (three hashes and the total) and
 * each node's list of job expiries and sizes; no native TTL, bounded.
 */
const isIndex = (base: string, key: string) => INDEXES.includes(key.slice(base.length)) || key.startsWith(`${base}qx:`);
const job = (n: number, extra: Partial<Job> = {}): Job => ({ chat_history: `h${n}`, cipherkey: "k", iv: "v", ...extra });
const answer = (n: number) => ({ chat_history: `a${n}`, cipherkey: "k", iv: "v" });

const why = redisSkipReason("RedisBrokerStore guarantees");
describe.skipIf(why !== undefined)("RedisBrokerStore", () => {
  let admin: Redis;
  const clients: Redis[] = [];
  beforeAll(async () => {
    admin = await redisClient("test-inspect");
    await whenReady(admin, 5_000);
  });
  afterAll(() => {
    for (const c of [admin, ...clients]) c.disconnect();
  });

  interface Made {
    store: RedisBrokerStore;
    base: string;
    expired: Record<ExpiredKind, number>;
  }
  /** A store on its own connection; `prefix` shares state with another store (a second replica). */
  async function make(opts: { clock?: Clock; limits?: Partial<BrokerStoreLimits>; sweepBatch?: number; prefix?: string } = {}): Promise<Made> {
    const client = await redisClient("test-store");
    clients.push(client);
    const keyPrefix = opts.prefix ?? uniquePrefix();
    const expired: Record<ExpiredKind, number> = { node: 0, job: 0, answer: 0, stream: 0 };
    const store = new RedisBrokerStore(
      client,
      { keyPrefix, limits: { ...TEST_LIMITS, ...opts.limits }, clock: opts.clock, commandTimeoutMs: COMMAND_TIMEOUT_MS, sweepBatch: opts.sweepBatch },
      (kind, n) => (expired[kind] += n),
    );
    return { store, base: `${keyPrefix}{legacy}:`, expired };
  }

  /** The datastore's own view: every key under the store's prefix. */
  async function keysOf(base: string): Promise<string[]> {
    const found: string[] = [];
    let cursor = "0";
    do {
      const [next, batch] = await admin.scan(cursor, "MATCH", `${base}*`, "COUNT", 1000);
      found.push(...batch);
      cursor = next;
    } while (cursor !== "0");
    return found;
  }
  const records = async (base: string) => (await keysOf(base)).filter((k) => !isIndex(base, k));

  /**
   * The byte counters as the datastore holds them, next to what they must equal: the total is the
   * sum of every per-record size in the index, and a node's counter the sum of its qx: sizes.
   */
  async function bytesOf(base: string) {
    const sum = (values: string[]) => values.reduce((a, v) => a + Number(v), 0);
    const perNode = await admin.hgetall(`${base}nodes:bytes`);
    const queued: Record<string, number> = {};
    for (const k of await keysOf(base)) {
      if (!k.startsWith(`${base}qx:`)) continue;
      const n = sum((await admin.lrange(k, 0, -1)).map((x) => x.split(":")[1] ?? "0"));
      if (n > 0) queued[k.slice(`${base}qx:`.length)] = n;
    }
    const total = Number((await admin.get(`${base}bytes`)) ?? 0);
    const parts = sum(Object.values(perNode)) + sum(Object.values(await admin.hgetall(`${base}answers:bytes`))) + sum(Object.values(await admin.hgetall(`${base}streams:bytes`)));
    expect(Object.fromEntries(Object.entries(perNode).map(([id, v]) => [id, Number(v)]))).toEqual(queued);
    expect(total).toBe(parts);
    return total;
  }

  /** Some of everything: nodes with queues, answers, stream sessions with chunks. */
  async function populate(store: RedisBrokerStore, n: number, keyOf: (label: string) => string = fakeKey) {
    const sessions: string[] = [];
    for (let i = 0; i < n; i++) {
      const node = keyOf("node");
      const client = keyOf("client");
      expect(await store.touchNode(node)).toBe("ok");
      expect(await store.enqueueJob(node, job(i, { client_public_key: client }))).toBe("queued");
      expect(await store.enqueueJob(node, job(i, { client_public_key: client, stream: true }))).toBe("queued");
      expect(await store.putAnswer(client, answer(i))).toBe("stored");
      const sid = keyOf("session");
      await store.openStream(client, sid);
      expect((await store.pushChunk(sid, { i, text: "x" }, false)).kind).toBe("stored");
      sessions.push(sid);
    }
    return sessions;
  }

  test("keys: one {legacy} hash tag under the prefix, named by digest even for kilobyte public keys", async () => {
    const { store, base } = await make({ clock: new ManualClock() });
    const huge = (label: string) => `${fakeKey(label)}${"A".repeat(4096)}`;
    await populate(store, 3, huge);
    const keys = await keysOf(base);
    expect(keys.length).toBeGreaterThan(INDEXES.length);
    for (const k of keys) {
      expect(k.startsWith(base)).toBe(true);
      // Redis hashes the first {...}: the prefix has no braces, so every key is in the {legacy} slot.
      expect(k.indexOf("{")).toBe(base.indexOf("{"));
      expect(k.length).toBeLessThan(base.length + 80);
    }
    // The full key is kept inside, and comes back intact.
    const picked = await store.pickNode();
    expect(picked?.length).toBeGreaterThan(4096);
  });

  test("every record carries a native TTL no longer than its lifetime plus the grace; only the expiry index does not", async () => {
    const limits = { nodeStaleMs: 30_000, jobTtlMs: 120_000, answerTtlMs: 60_000, streamTtlMs: 90_000 };
    const { store, base } = await make({ clock: new ManualClock(), limits });
    await populate(store, 4);
    const longest = Math.max(limits.nodeStaleMs + 1, limits.jobTtlMs, limits.answerTtlMs + 1, limits.streamTtlMs + 1) + BACKSTOP_GRACE_MS;
    for (const k of await keysOf(base)) {
      const ttl = await admin.pttl(k);
      if (isIndex(base, k)) {
        expect(ttl).toBe(-1);
      } else {
        expect(ttl).toBeGreaterThan(0);
        expect(ttl).toBeLessThanOrEqual(longest);
      }
    }
  });

  test("logical expiry (injected clock) + sweep: the key count returns to its baseline, each item counted once", async () => {
    const clock = new ManualClock();
    const { store, base, expired } = await make({ clock });
    const baseline = (await keysOf(base)).length;
    expect(baseline).toBe(0);
    await populate(store, 5);
    expect((await keysOf(base)).length).toBeGreaterThan(baseline);
    clock.advance(Math.max(TEST_LIMITS.nodeStaleMs, TEST_LIMITS.jobTtlMs, TEST_LIMITS.answerTtlMs, TEST_LIMITS.streamTtlMs) + 1);
    await store.sweep();
    expect((await keysOf(base)).length).toBe(baseline);
    expect(expired).toEqual({ node: 5, job: 10, answer: 5, stream: 5 });
    expect(await store.stats()).toEqual({ nodes: 0, queuedJobs: 0, maxQueueDepth: 0, answers: 0, streams: 0, storedBytes: 0 });
    await store.sweep();
    expect(expired).toEqual({ node: 5, job: 10, answer: 5, stream: 5 });
  });

  test("the datastore's TTLs remove the records even when nobody sweeps; a later sweep empties the indexes, counts, and releases every byte", async () => {
    // No injected clock: the datastore's TIME decides, and its TTLs run in real time.
    const limits = { nodeStaleMs: 150, jobTtlMs: 250, answerTtlMs: 150, streamTtlMs: 150 };
    const { store, base, expired } = await make({ limits });
    await populate(store, 3);
    expect((await records(base)).length).toBeGreaterThan(0);
    const deadline = Date.now() + limits.jobTtlMs + BACKSTOP_GRACE_MS + 3_000;
    while ((await records(base)).length > 0 && Date.now() < deadline) await Bun.sleep(50);
    expect(await records(base)).toEqual([]);
    // Only the bounded expiry index is left (the zsets, the sizes and 3 nodes' job expiries), nothing
    // counted yet: the payloads are gone, their bytes still held until a sweep processes the index.
    const left = await keysOf(base);
    expect(left.filter((k) => INDEXES.includes(k.slice(base.length))).sort()).toEqual(INDEXES.map((i) => base + i).sort());
    expect(left.length).toBe(INDEXES.length + 3);
    expect(expired).toEqual({ node: 0, job: 0, answer: 0, stream: 0 });
    expect(await bytesOf(base)).toBeGreaterThan(0);
    await store.sweep();
    expect(await keysOf(base)).toEqual([]);
    expect(expired).toEqual({ node: 3, job: 6, answer: 3, stream: 3 });
    expect((await store.stats()).storedBytes).toBe(0);
  });

  test("a flood of distinct keys stays within every configured bound", async () => {
    const clock = new ManualClock();
    const limits = { maxNodes: 5, maxQueueDepth: 4, maxAnswers: 6, maxStreamSessions: 3, maxStreamChunks: 3 };
    const { store, base } = await make({ clock, limits });
    const results = { full: 0, queueFull: 0, answersFull: 0, streamsRefused: 0, chunksFull: 0 };
    const nodes: string[] = [];
    for (let i = 0; i < 200; i++) {
      const node = fakeKey("flood-node");
      if ((await store.touchNode(node)) === "full") results.full++;
      else nodes.push(node);
      if ((await store.putAnswer(fakeKey("flood-client"), answer(i))) === "full") results.answersFull++;
      // As /faucet does: a streaming job is refused once the sessions are full.
      if (await store.canOpenStream()) await store.openStream(fakeKey("flood-stream"), `sid-${i}`);
      else results.streamsRefused++;
      // Keys nobody registered create nothing.
      expect(await store.enqueueJob(fakeKey("nobody"), job(i))).toBe("unknown_node");
      expect(await store.takeJobs(fakeKey("nobody"), 5)).toEqual([]);
      expect(await store.takeAnswer(fakeKey("nobody"))).toBeUndefined();
      expect(await store.drainStream(fakeKey("nobody"))).toBeUndefined();
      expect(await store.pushChunk(`nobody-${i}`, "c", false)).toEqual({ kind: "unknown_session" });
    }
    for (const node of nodes) {
      for (let j = 0; j < 20; j++) if ((await store.enqueueJob(node, job(j))) === "queue_full") results.queueFull++;
    }
    for (let i = 0; i < 3; i++) {
      for (let j = 0; j < 20; j++) if ((await store.pushChunk(`sid-${i}`, j, false)).kind === "session_full") results.chunksFull++;
    }
    expect(results).toEqual({ full: 195, queueFull: 5 * 16, answersFull: 194, streamsRefused: 197, chunksFull: 3 * 17 });

    expect(await admin.zcard(`${base}nodes`)).toBe(5);
    expect(await admin.zcard(`${base}nodes:due`)).toBe(5);
    expect(await admin.zcard(`${base}answers`)).toBe(6);
    expect(await admin.zcard(`${base}streams`)).toBe(3);
    const keys = await keysOf(base);
    // node + q + qx per node, one hash per answer, session + chunks + client pointer per stream, the zsets.
    expect(keys.length).toBeLessThanOrEqual(5 * 3 + 6 + 3 * 3 + INDEXES.length);
    for (const k of keys) {
      const kind = await admin.type(k);
      if (kind === "list") expect(await admin.llen(k)).toBeLessThanOrEqual(4);
    }
    // Jobs h0..h3 per node (4 bytes each with "k" and "v"), answers a0..a5, chunks 0..2 of 3 sessions.
    expect(await store.stats()).toEqual({ nodes: 5, queuedJobs: 20, maxQueueDepth: 4, answers: 6, streams: 3, storedBytes: 5 * 4 * 4 + 6 * 4 + 3 * 3 });
    expect(await bytesOf(base)).toBe(5 * 4 * 4 + 6 * 4 + 3 * 3);

    // And all of it goes once its time is up.
    clock.advance(Math.max(TEST_LIMITS.jobTtlMs, TEST_LIMITS.answerTtlMs, TEST_LIMITS.streamTtlMs, TEST_LIMITS.nodeStaleMs) + 1);
    await store.sweep();
    expect(await keysOf(base)).toEqual([]);
  });

  test("stored bytes: the counters are the index's sizes after every kind of transition, and go with the last record", async () => {
    const clock = new ManualClock();
    const limits = { maxStoredBytes: 100_000, nodeStaleMs: 30_000, jobTtlMs: 60_000, answerTtlMs: 60_000, streamTtlMs: 60_000 };
    const { store, base } = await make({ clock, limits });
    const steps: [string, () => Promise<unknown>][] = [
      ["touch", () => store.touchNode("n1")],
      ["touch n2", () => store.touchNode("n2")],
      ["enqueue", () => store.enqueueJob("n1", job(1, { chat_history: "x".repeat(500), client_public_key: "c1" }))],
      ["enqueue 2", () => store.enqueueJob("n1", job(2, { chat_history: "y".repeat(300) }))],
      ["enqueue n2", () => store.enqueueJob("n2", job(3, { chat_history: "z".repeat(700) }))],
      ["take one", () => store.takeJobs("n1", 1)],
      ["put", () => store.putAnswer("c1", { chat_history: "a".repeat(400), cipherkey: "k", iv: "v" })],
      ["replace smaller", () => store.putAnswer("c1", { chat_history: "a".repeat(40), cipherkey: "k", iv: "v" })],
      ["put c2", () => store.putAnswer("c2", { chat_history: "b".repeat(900), cipherkey: "k", iv: "v" })],
      ["take c1", () => store.takeAnswer("c1")],
      ["open", () => store.openStream("c1", "s1")],
      ["push", () => store.pushChunk("s1", { text: "t".repeat(200) }, false)],
      ["push 2", () => store.pushChunk("s1", "u".repeat(50), false)],
      ["drain", () => store.drainStream("c1")],
      ["push 3", () => store.pushChunk("s1", "v".repeat(80), false)],
      ["replace session", () => store.openStream("c1", "s2")],
      ["push s2", () => store.pushChunk("s2", "w".repeat(60), false)],
      ["everything expires", async () => clock.advance(60_001)],
      ["sweep", () => store.sweep()],
    ];
    for (const [what, step] of steps) {
      await step();
      const held = await bytesOf(base);
      expect({ what, stats: (await store.stats()).storedBytes }).toEqual({ what, stats: held });
    }
    // Past every TTL: the jobs (and so n1, n2), c2's answer and s2 went with the sweep, and their bytes.
    expect(await keysOf(base)).toEqual([]);
  });

  test("the byte budget is one budget for replicas sharing the state: exactly what fits is accepted", async () => {
    // 1000 bytes; a node's share 250: two 100-byte jobs per node, ten in all.
    const a = await make({ limits: { maxStoredBytes: 1_000, maxQueueDepth: 10 } });
    const prefix = a.base.slice(0, -"{legacy}:".length);
    const b = await make({ prefix, limits: { maxStoredBytes: 1_000, maxQueueDepth: 10 } });
    const nodes = Array.from({ length: 8 }, (_, i) => `node-${i}`);
    for (const n of nodes) await a.store.touchNode(n);
    const sized = (i: number): Job => ({ chat_history: "x".repeat(98), cipherkey: "k", iv: String(i % 10) });
    const results = await Promise.all(
      nodes.flatMap((n, i) => [0, 1, 2].map((j) => (j % 2 ? a : b).store.enqueueJob(n, sized(i * 3 + j)))),
    );
    expect(results.filter((r) => r === "queued")).toHaveLength(10);
    expect(results.every((r) => ["queued", "storage_full", "node_storage_full"].includes(r))).toBe(true);
    expect(await bytesOf(a.base)).toBe(1_000);
    for (const n of nodes) expect(Number((await admin.hget(`${a.base}nodes:bytes`, hashKeyOf(n))) ?? 0)).toBeLessThanOrEqual(250);
  });

  test("jobs queued before sizes were kept (qx entries without one) are delivered and expire at 0 bytes", async () => {
    const clock = new ManualClock();
    const { store, base, expired } = await make({ clock, limits: { jobTtlMs: 60_000, nodeStaleMs: 30_000 } });
    await store.touchNode("old");
    const id = hashKeyOf("old");
    // As the previous layout wrote them: a bare expiry per job.
    for (const n of [1, 2]) {
      await admin.rpush(`${base}q:${id}`, JSON.stringify(job(n)));
      await admin.rpush(`${base}qx:${id}`, String(clock.now() + 60_000));
    }
    await admin.zadd(`${base}nodes:due`, clock.now() + 60_000, id);
    expect(await store.enqueueJob("old", job(3))).toBe("queued");
    expect(await bytesOf(base)).toBe(4);
    expect((await store.takeJobs("old", 2)).map((j) => j.chat_history)).toEqual(["h1", "h2"]);
    expect(await bytesOf(base)).toBe(4);
    await admin.rpush(`${base}q:${id}`, JSON.stringify(job(4)));
    await admin.rpush(`${base}qx:${id}`, String(clock.now() + 60_000));
    clock.advance(60_000);
    await store.sweep();
    expect(expired.job).toBe(2);
    expect(await keysOf(base)).toEqual([]);
  });

  test("a full store makes room from what has expired, as the memory store's sweep-on-full does", async () => {
    const clock = new ManualClock();
    const { store, expired } = await make({ clock, limits: { maxNodes: 2, maxAnswers: 2, maxStreamSessions: 1, nodeStaleMs: 30_000, answerTtlMs: 60_000, streamTtlMs: 60_000 } });
    await store.touchNode("a");
    await store.touchNode("b");
    await store.putAnswer("x", answer(1));
    await store.putAnswer("y", answer(2));
    await store.openStream("s", "sid");
    expect(await store.touchNode("c")).toBe("full");
    expect(await store.putAnswer("z", answer(3))).toBe("full");
    expect(await store.canOpenStream()).toBe(false);
    clock.advance(60_001);
    expect(await store.touchNode("c")).toBe("ok");
    expect(await store.putAnswer("z", answer(3))).toBe("stored");
    expect(await store.canOpenStream()).toBe(true);
    expect(expired).toEqual({ node: 2, job: 0, answer: 2, stream: 1 });
  });

  test("a node this store touched a moment ago is not touched again: no datastore call until TOUCH_REUSE_MS passed", async () => {
    const clock = new ManualClock();
    const { store, base } = await make({ clock });
    expect(await store.touchNode("n")).toBe("ok");
    // Removed behind the store's back: a touch that reached the datastore would write it again.
    await admin.zrem(`${base}nodes`, hashKeyOf("n"));
    clock.advance(TOUCH_REUSE_MS - 1);
    expect(await store.touchNode("n")).toBe("ok");
    expect(await admin.zscore(`${base}nodes`, hashKeyOf("n"))).toBeNull();
    clock.advance(1);
    expect(await store.touchNode("n")).toBe("ok");
    expect(await admin.zscore(`${base}nodes`, hashKeyOf("n"))).not.toBeNull();
  });

  test("each sweep does bounded work; repeated sweeps drain the backlog, counting each item once", async () => {
    const clock = new ManualClock();
    const { store, expired } = await make({ clock, sweepBatch: 10, limits: { answerTtlMs: 1_000 } });
    for (let i = 0; i < 25; i++) await store.putAnswer(`client-${i}`, answer(i));
    clock.advance(1_001);
    await store.sweep();
    expect((await store.stats()).answers).toBe(15);
    await store.sweep();
    await store.sweep();
    expect((await store.stats()).answers).toBe(0);
    expect(expired.answer).toBe(25);
  });

  test("two replicas on one prefix: every job, answer and chunk is delivered exactly once, jobs in order", async () => {
    const a = await make({ limits: { maxQueueDepth: 200 } });
    const prefix = a.base.slice(0, -"{legacy}:".length);
    const b = await make({ prefix, limits: { maxQueueDepth: 200 } });
    const node = fakeKey("node");
    expect(await a.store.touchNode(node)).toBe("ok");
    expect(await b.store.pickNode()).toBe(node);
    const total = 150;
    const enqueued = Promise.all(Array.from({ length: total }, (_, i) => a.store.enqueueJob(node, job(i))));
    // FIFO per node: enqueue strictly in order, take concurrently from both replicas.
    await enqueued;
    const takers = [a.store, b.store, a.store, b.store].map(async (s) => {
      const got: number[] = [];
      for (;;) {
        const jobs = await s.takeJobs(node, 3);
        if (jobs.length === 0) return got;
        got.push(...jobs.map((j) => Number(j.chat_history.slice(1))));
      }
    });
    const taken = await Promise.all(takers);
    for (const got of taken) expect(got).toEqual([...got].sort((x, y) => x - y));
    expect(taken.flat().sort((x, y) => x - y)).toEqual(Array.from({ length: total }, (_, i) => i));

    const client = fakeKey("client");
    await a.store.putAnswer(client, answer(7));
    const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).store.takeAnswer(client)));
    expect(answers.filter((x) => x !== undefined)).toEqual([answer(7)]);

    await a.store.openStream(client, "sid-shared");
    const drained: unknown[] = [];
    let done = false;
    const drainer = (async () => {
      while (!done) {
        const d = await b.store.drainStream(client);
        if (!d) break;
        drained.push(...d.chunks);
        done = d.final;
      }
    })();
    for (let i = 0; i < 60; i++) expect((await a.store.pushChunk("sid-shared", { i }, i === 59)).kind).toBe("stored");
    await drainer;
    expect(drained).toEqual(Array.from({ length: 60 }, (_, i) => ({ i })));
  });

  test("pickNode is uniform among fresh nodes and never returns a stale one", async () => {
    const clock = new ManualClock();
    const { store } = await make({ clock, limits: { nodeStaleMs: 30_000 } });
    for (const k of ["stale-1", "stale-2"]) await store.touchNode(k);
    clock.advance(30_001);
    const fresh = ["fresh-1", "fresh-2", "fresh-3", "fresh-4"];
    for (const k of fresh) await store.touchNode(k);
    const seen = new Map<string, number>();
    for (let i = 0; i < 800; i++) {
      const k = (await store.pickNode())!;
      seen.set(k, (seen.get(k) ?? 0) + 1);
    }
    expect([...seen.keys()].sort()).toEqual(fresh);
    // Expected 200 each; 120 is more than 6 standard deviations away.
    for (const k of fresh) expect(seen.get(k)!).toBeGreaterThan(120);
  });

  test("an unreachable datastore answers 503 state_unavailable within the command timeout, never hangs", async () => {
    const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = probe.port;
    probe.stop(true);
    const client = connectRedis({ url: `redis://127.0.0.1:${port}`, keyPrefix: "", commandTimeoutMs: 300 }, "test-down");
    clients.push(client);
    const store = new RedisBrokerStore(client, { keyPrefix: "down:", limits: TEST_LIMITS, commandTimeoutMs: 300 });
    const t0 = performance.now();
    const err = await store.touchNode("k").catch((e: unknown) => e);
    expect(performance.now() - t0).toBeLessThan(2_000);
    expect(err).toBeInstanceOf(RelayError);
    expect((err as RelayError).status).toBe(503);
    expect((err as RelayError).code).toBe("state_unavailable");
    await expect(store.sweep()).rejects.toBeInstanceOf(RelayError);

    // Over HTTP: the relay's JSON 503 with Retry-After, for a node and for a client.
    const relay = startLegacyRelay({ RELAY_LONG_POLL_MS: "0" }, { store });
    try {
      for (const res of [await relay.post("/sink", { server_public_key: fakeKey() }), await relay.get("/next_server")]) {
        expect(res.status).toBe(503);
        expect(res.headers.get("retry-after")).toBe("1");
        expect(((await res.json()) as { error: { type: string } }).error.type).toBe("state_unavailable");
      }
    } finally {
      await relay.shutdown();
    }
  });
});
