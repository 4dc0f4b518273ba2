// Legacy wake-ups on Valkey/Redis: the transitions that make work available publish the wake-up in
// their own script, and only while a poll may be held for it (src/broker/redis/shared.ts,
// "Wake-ups"). A private redis-server, so INFO commandstats counts only this file's commands; the
// relays are in-process, on real sockets, two of them sharing the datastore as replicas do.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type Redis from "ioredis";
import { RedisBrokerStore } from "../../src/broker/redis/index.ts";
import { WAKE_MARGIN_MS } from "../../src/broker/redis/shared.ts";
import { topics } from "../../src/broker/types.ts";
import { ManualClock } from "../../src/clock.ts";
import { wakeChannel, wakeDigest } from "../../src/common/redis-notifier.ts";
import { connectRedis, whenReady } from "../../src/state/redis.ts";
import { prng } from "../helpers/prng.ts";
import { redisSkipReason, startRedis, type RedisServer } from "../helpers/redis.ts";
import { fakeKey, job, startLegacyRelay, type TestRelay } from "../helpers/relay.ts";
import { BROKER_BACKENDS, COMMAND_TIMEOUT_MS, TEST_LIMITS } from "./backends.ts";

const HOLD_MS = 3000;
const why = redisSkipReason("test/broker/wake.test.ts");

const waitUntil = async (cond: () => boolean, ms = 2000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not reached");
    await Bun.sleep(5);
  }
};

// The contract every store keeps: a look that may be held (holdMs) finds, takes and leaves exactly
// what one that may not does; only whether the store publishes its wake-ups differs.
for (const backend of BROKER_BACKENDS) {
  const unavailable = backend.unavailable?.();
  describe.skipIf(unavailable !== undefined)(`looks that may be held: ${backend.name}`, () => {
    test("take and drain with a hold find what those without one find, oldest first, once", async () => {
      const store = await backend.make();
      try {
        expect(store.publishesWakes ?? false).toBe(backend.name === "redis");
        const node = fakeKey("node");
        const client = fakeKey("client");
        expect(await store.touchNode(node)).toBe("ok");
        expect(await store.takeJobs(node, 2, HOLD_MS)).toEqual([]);
        for (const n of [1, 2, 3]) expect(await store.enqueueJob(node, job(node, { chat_history: `j${n}` }))).toBe("queued");
        expect((await store.takeJobs(node, 2, HOLD_MS)).map((j) => j.chat_history)).toEqual(["j1", "j2"]);
        expect((await store.takeJobs(node, 2, 0)).map((j) => j.chat_history)).toEqual(["j3"]);
        expect(await store.takeJobs(node, 2, HOLD_MS)).toEqual([]);

        expect(await store.takeAnswer(client, HOLD_MS)).toBeUndefined();
        expect(await store.putAnswer(client, { chat_history: "a", cipherkey: "k", iv: "v" })).toBe("stored");
        expect(await store.takeAnswer(client, HOLD_MS)).toEqual({ chat_history: "a", cipherkey: "k", iv: "v" });
        expect(await store.takeAnswer(client, HOLD_MS)).toBeUndefined();

        expect(await store.drainStream(client, HOLD_MS)).toBeUndefined();
        await store.openStream(client, "session-1");
        expect(await store.drainStream(client, HOLD_MS)).toEqual({ sessionId: "session-1", chunks: [], final: false });
        expect(await store.pushChunk("session-1", "c1", true)).toEqual({ kind: "stored", clientKey: client });
        expect(await store.drainStream(client, HOLD_MS)).toEqual({ sessionId: "session-1", chunks: ["c1"], final: true });
        expect(await store.drainStream(client, HOLD_MS)).toBeUndefined();
      } finally {
        await store.close();
      }
    });
  });
}

describe.skipIf(why !== undefined)("legacy wake-ups published by the Valkey store's scripts", () => {
  let redis: RedisServer;
  let admin: Redis;
  const clients: Redis[] = [];
  let seq = 0;
  const connect = async (role: string) => {
    const c = connectRedis({ url: redis.url, keyPrefix: "", commandTimeoutMs: COMMAND_TIMEOUT_MS }, role);
    clients.push(c);
    await whenReady(c, 5_000);
    return c;
  };
  beforeAll(async () => {
    redis = await startRedis({ persist: false });
    admin = await connect("test-admin");
  });
  afterAll(async () => {
    for (const c of clients) c.disconnect();
    await redis.stop();
  });

  /** PUBLISH commands the datastore ran so far, scripts' included. */
  const publishes = async () => Number(/cmdstat_publish:calls=(\d+)/.exec(await admin.info("commandstats"))?.[1] ?? 0);

  /** A store publishing on its prefix's wake channel, and what a subscriber of that channel heard. */
  async function storeWithEar(clock?: ManualClock) {
    const keyPrefix = `wake-${++seq}:`;
    const channel = wakeChannel(keyPrefix);
    const store = new RedisBrokerStore(await connect("test-store"), {
      keyPrefix, limits: TEST_LIMITS, clock, commandTimeoutMs: COMMAND_TIMEOUT_MS, wakeChannel: channel,
    });
    const sub = await connect("test-sub");
    const heard: string[] = [];
    sub.on("message", (_channel: string, digest: string) => heard.push(digest));
    await sub.subscribe(channel);
    // A PING answered on the subscriber comes after every message published before it was sent.
    const heardSoFar = async () => {
      await sub.ping();
      return [...heard];
    };
    return { store, heardSoFar };
  }

  describe("the store", () => {
    test("a look that found nothing and may be held marks its topic: the job, answer, session and chunk that follow each publish its wake-up", async () => {
      const { store, heardSoFar } = await storeWithEar();
      const node = fakeKey("node");
      const client = fakeKey("client");
      expect(store.publishesWakes).toBe(true);
      expect(await store.touchNode(node)).toBe("ok");

      expect(await store.takeJobs(node, 1, HOLD_MS)).toEqual([]);
      expect(await store.enqueueJob(node, job(node))).toBe("queued");
      expect(await heardSoFar()).toEqual([wakeDigest(topics.job(node))]);

      expect(await store.takeAnswer(client, HOLD_MS)).toBeUndefined();
      expect(await store.putAnswer(client, { chat_history: "a", cipherkey: "k", iv: "v" })).toBe("stored");
      expect((await heardSoFar()).slice(1)).toEqual([wakeDigest(topics.answer(client))]);

      const stream = wakeDigest(topics.stream(client));
      expect(await store.drainStream(client, HOLD_MS)).toBeUndefined();
      await store.openStream(client, "session-1");
      expect((await heardSoFar()).slice(2)).toEqual([stream]);
      // A session without chunks is nothing to hand over either: the drain marks again.
      expect(await store.drainStream(client, HOLD_MS)).toEqual({ sessionId: "session-1", chunks: [], final: false });
      expect(await store.pushChunk("session-1", "c1", false)).toEqual({ kind: "stored", clientKey: client });
      expect((await heardSoFar()).slice(2)).toEqual([stream, stream]);
    });

    test("nobody can be waiting (the look found its work, or will not be held): nothing is published", async () => {
      const { store, heardSoFar } = await storeWithEar();
      const node = fakeKey("node");
      const client = fakeKey("client");
      await store.touchNode(node);
      const before = await publishes();
      for (let i = 0; i < 3; i++) {
        // A cycle whose looks each find what they look for.
        expect(await store.enqueueJob(node, job(node, { chat_history: `j${i}` }))).toBe("queued");
        expect((await store.takeJobs(node, 1, HOLD_MS)).map((j) => j.chat_history)).toEqual([`j${i}`]);
        expect(await store.putAnswer(client, { chat_history: `a${i}`, cipherkey: "k", iv: "v" })).toBe("stored");
        expect((await store.takeAnswer(client, HOLD_MS))?.chat_history).toBe(`a${i}`);
      }
      // Looks that found nothing but will not be held (hold 0 or none: holds off, a paced poll).
      expect(await store.takeJobs(node, 1)).toEqual([]);
      expect(await store.takeAnswer(client, 0)).toBeUndefined();
      expect(await store.drainStream(client, 0)).toBeUndefined();
      expect(await store.enqueueJob(node, job(node))).toBe("queued");
      expect(await store.putAnswer(client, { chat_history: "a", cipherkey: "k", iv: "v" })).toBe("stored");
      await store.openStream(client, "s");
      expect(await store.pushChunk("s", "c", true)).toMatchObject({ kind: "stored" });
      expect(await heardSoFar()).toEqual([]);
      expect(await publishes()).toBe(before);
    });

    test("the mark lasts the hold plus WAKE_MARGIN_MS by the store's clock and a shorter later look does not shorten it; work arriving as it expires publishes nothing", async () => {
      const clock = new ManualClock();
      const { store, heardSoFar } = await storeWithEar(clock);
      const [held, over] = [fakeKey("node"), fakeKey("node")];
      for (const node of [held, over]) await store.touchNode(node);
      expect(await store.takeJobs(held, 1, 1_000)).toEqual([]);
      expect(await store.takeJobs(over, 1, 1_000)).toEqual([]);
      // Another poll of the node with less of its hold left (or a re-poll through another replica).
      clock.advance(500);
      expect(await store.takeJobs(held, 1, 10)).toEqual([]);
      clock.advance(1_000 + WAKE_MARGIN_MS - 500 - 1);
      expect(await store.enqueueJob(held, job(held))).toBe("queued");
      expect(await heardSoFar()).toEqual([wakeDigest(topics.job(held))]);
      // The poll's hold ended a margin ago, its last look with it: nobody can wait any more.
      clock.advance(1);
      expect(await store.enqueueJob(over, job(over))).toBe("queued");
      expect(await heardSoFar()).toEqual([wakeDigest(topics.job(held))]);
    });

    test("a published mark is used up: the next job publishes only after a look found nothing again", async () => {
      const { store, heardSoFar } = await storeWithEar();
      const node = fakeKey("node");
      const woken = wakeDigest(topics.job(node));
      await store.touchNode(node);
      expect(await store.takeJobs(node, 1, HOLD_MS)).toEqual([]);
      expect(await store.enqueueJob(node, job(node))).toBe("queued");
      expect(await store.enqueueJob(node, job(node))).toBe("queued");
      expect(await heardSoFar()).toEqual([woken]);
      // The woken poll takes one; the queue is not empty, so nothing is marked.
      expect(await store.takeJobs(node, 1, HOLD_MS)).toHaveLength(1);
      expect(await store.takeJobs(node, 1, HOLD_MS)).toHaveLength(1);
      expect(await store.takeJobs(node, 1, HOLD_MS)).toEqual([]);
      expect(await store.enqueueJob(node, job(node))).toBe("queued");
      expect(await heardSoFar()).toEqual([woken, woken]);
    });
  });

  describe("two relays on one datastore", () => {
    const relays: TestRelay[] = [];
    let a: TestRelay;
    let b: TestRelay;
    beforeAll(() => {
      const env = {
        TOKENPLACE_RELAY_STATE_BACKEND: "redis",
        TOKENPLACE_RELAY_REDIS_URL: `${redis.url}/0`,
        TOKENPLACE_RELAY_REDIS_KEY_PREFIX: `wake-relays-${process.pid}:`,
        RELAY_LONG_POLL_MS: String(HOLD_MS),
      };
      a = startLegacyRelay(env);
      b = startLegacyRelay(env);
      relays.push(a, b);
    });
    afterAll(async () => {
      await Promise.all(relays.map((r) => r.shutdown()));
    });

    test("both replicas are ready: subscribed to the wake channel", async () => {
      for (const r of [a, b]) {
        const end = Date.now() + 5_000;
        while ((await r.get("/healthz")).status !== 200) {
          if (Date.now() > end) throw new Error("relay not ready");
          await Bun.sleep(20);
        }
      }
    });

    test("a /sink held on A is woken by /faucet on B, long before its hold ends", async () => {
      const node = fakeKey("node");
      for (let i = 0; i < 5; i++) {
        const held = a.post("/sink", { server_public_key: node });
        await waitUntil(() => a.app.holds.waiting === 1);
        const t0 = performance.now();
        expect((await b.post("/faucet", job(node, { chat_history: `n${i}` }))).status).toBe(200);
        const body = (await (await held).json()) as Record<string, unknown>;
        expect(body.chat_history).toBe(`n${i}`);
        expect(body.next_ping_in_x_seconds).toBe(0);
        // Woken through the datastore, not found by the look at the end of the 3 s hold.
        expect(performance.now() - t0).toBeLessThan(HOLD_MS / 2);
      }
    });

    /** Registers a node the way nodes do it: a held /sink on A, woken by a first job posted on B. */
    const register = async (node: string) => {
      const registering = a.post("/sink", { server_public_key: node });
      await waitUntil(() => a.app.holds.waiting === 1);
      expect((await b.post("/faucet", job(node))).status).toBe(200);
      expect((await registering).status).toBe(200);
    };

    test("a job racing the /sink's looks (posted on B at any moment of A's look, subscribe, look) is never left to the hold's end", async () => {
      const node = fakeKey("node");
      await register(node);
      const rand = prng(7);
      for (let i = 0; i < 20; i++) {
        const t0 = performance.now();
        const held = a.post("/sink", { server_public_key: node });
        await Bun.sleep(rand.int(15));
        expect((await b.post("/faucet", job(node, { chat_history: `r${i}` }))).status).toBe(200);
        expect(((await (await held).json()) as Record<string, unknown>).chat_history).toBe(`r${i}`);
        expect(performance.now() - t0).toBeLessThan(HOLD_MS / 2);
      }
    }, 15_000);

    test("a /retrieve held on A is woken by /source on B; a /stream/retrieve held on A by the session /sink opens on B and by a chunk on B", async () => {
      const client = fakeKey("client");
      const held = a.post("/retrieve", { client_public_key: client });
      await waitUntil(() => a.app.holds.waiting === 1);
      let t0 = performance.now();
      expect((await b.post("/source", { client_public_key: client, chat_history: "answer", cipherkey: "k", iv: "v" })).status).toBe(200);
      expect(await (await held).json()).toEqual({ chat_history: "answer", cipherkey: "k", iv: "v" });
      expect(performance.now() - t0).toBeLessThan(HOLD_MS / 2);

      const node = fakeKey("node");
      const streamClient = fakeKey("client");
      await register(node);
      expect((await b.post("/faucet", job(node, { stream: true, client_public_key: streamClient }))).status).toBe(200);
      // Held before the session exists: the session /sink opens on B wakes it, it finds no chunk
      // yet and waits again (marking again), and the chunk posted on B wakes it once more.
      const waiting = a.post("/stream/retrieve", { client_public_key: streamClient });
      await waitUntil(() => a.app.holds.waiting === 1);
      t0 = performance.now();
      const dispatched = (await (await b.post("/sink", { server_public_key: node })).json()) as { stream_session_id: string };
      await Bun.sleep(50);
      expect(a.app.holds.waiting).toBe(1);
      expect((await b.post("/stream/source", { session_id: dispatched.stream_session_id, chunk: "c1", final: true })).status).toBe(200);
      expect(await (await waiting).json()).toEqual({ stream: true, session_id: dispatched.stream_session_id, chunks: ["c1"], final: true });
      expect(performance.now() - t0).toBeLessThan(HOLD_MS / 2);
    }, 15_000);

    test("a cycle whose steps find their work at once publishes nothing (the relay sends no PUBLISH of its own)", async () => {
      const node = fakeKey("node");
      const client = fakeKey("client");
      // Registration's held /sink is woken by one wake-up, which uses up the mark it left.
      let before = await publishes();
      await register(node);
      expect(await publishes()).toBe(before + 1);
      before = await publishes();
      for (let i = 0; i < 10; i++) {
        expect((await b.post("/faucet", job(node, { client_public_key: client, chat_history: `c${i}` }))).status).toBe(200);
        expect(((await (await a.post("/sink", { server_public_key: node })).json()) as Record<string, unknown>).chat_history).toBe(`c${i}`);
        expect((await a.post("/source", { client_public_key: client, chat_history: `a${i}`, cipherkey: "k", iv: "v" })).status).toBe(200);
        expect(((await (await b.post("/retrieve", { client_public_key: client })).json()) as Record<string, unknown>).chat_history).toBe(`a${i}`);
      }
      expect(await publishes()).toBe(before);
    });
  });
});
