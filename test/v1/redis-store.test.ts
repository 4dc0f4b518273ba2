// The Valkey/Redis V1Store beyond the shared contract: the same answers as the memory store for
// any sequence of operations, nothing left behind once everything expired, replicas sharing one
// state where exactly one terminal transition wins (spec §7.8), datastore time, bounded sweeps,
// and 503 state_unavailable when the datastore is gone.
import { describe, expect, test } from "bun:test";
import type Redis from "ioredis";
import { ManualClock } from "../../src/clock.ts";
import { sha256Hex } from "../../src/common/tokens.ts";
import { RelayError } from "../../src/errors.ts";
import { connectRedis } from "../../src/state/redis.ts";
import { RedisNotifier, wakeChannel } from "../../src/common/redis-notifier.ts";
import { MemoryV1Store, RedisV1Store } from "../../src/v1/index.ts";
import { SWEEP_BATCH } from "../../src/v1/redis/housekeeping.ts";
import { v1Topics, type Capabilities, type Envelope, type TerminalStatus, type V1Events, type V1Store } from "../../src/v1/store.ts";
import { DEFAULT_CAPABILITIES } from "../../src/v1/validate.ts";
import { BACKENDS, REDIS_COMMAND_TIMEOUT_MS, TEST_LIMITS, recorder, redisTestClient, uniqueRedisPrefix, type TestLimits } from "./backends.ts";
import { prng } from "../helpers/prng.ts";

const CAPS: Capabilities = { ...DEFAULT_CAPABILITIES, supported_model_ids: ["qwen3-8b-instruct"], maximum_output_tokens: 8192 };
const CAPS_64K: Capabilities = { ...CAPS, active_context_tier: "64k-full", maximum_total_context_tokens: 65536 };
const CAPS_2: Capabilities = { ...CAPS, max_concurrency: 2 };
const CRED = sha256Hex("credential-A");
const OTHER = sha256Hex("credential-B");
const PROOF = sha256Hex("cancel-proof");
const q8k = { model: "qwen3-8b-instruct", tier: "8k-fast" as const, maxQueueDepth: 1024 };

const redisBackend = BACKENDS.find((b) => b.name === "redis")!;
const why = redisBackend.unavailable?.();

const env = (clientKey: string, requestId?: string, text = "Y2lwaGVy"): Envelope => ({
  client_public_key: clientKey,
  chat_history: text,
  cipherkey: "a2V5",
  iv: "aXY=",
  ...(requestId === undefined ? {} : { request_id: requestId, protocol: "tokenplace_api_v1_relay_e2ee", version: 1 }),
});

/** A store on the shared test server, with its client and prefix for looking at the keys. */
function redisStore(opts: { clock?: ManualClock; limits?: TestLimits; prefix?: string; events?: V1Events } = {}) {
  const client = redisTestClient();
  const keyPrefix = opts.prefix ?? uniqueRedisPrefix();
  const store = new RedisV1Store(
    client,
    { keyPrefix, limits: { ...TEST_LIMITS, ...opts.limits }, clock: opts.clock, commandTimeoutMs: REDIS_COMMAND_TIMEOUT_MS },
    opts.events ?? recorder(),
  );
  return { store, client, keyPrefix };
}

async function keysUnder(client: Redis, keyPrefix: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = "0";
  do {
    const [next, batch] = await client.scan(cursor, "MATCH", `${keyPrefix}*`, "COUNT", 1000);
    keys.push(...batch);
    cursor = next;
  } while (cursor !== "0");
  return keys.map((k) => k.slice(keyPrefix.length)).sort();
}


describe.skipIf(why !== undefined)("V1Store on Valkey/Redis", () => {
  describe("the same answers as the memory store", () => {
    /** Small bounds and lifetimes so that every limit and every expiry is reached. */
    const LIMITS = {
      leaseMs: 1_000, maxNodes: 3, maxRequests: 4, maxAnswers: 4, inFlightTtlMs: 500,
      tombstoneTtlMs: 700, terminalTtlMs: 1_500, pendingTtlMs: 1_200, answerTtlMs: 2_000, maxStoredBytes: 200,
      maxStoredBytesPerClient: 90,
    };
    const NODES = ["node-a", "node-b", "node-c", "node-d"].map((n) => `${n}-${"k".repeat(40)}`);
    const CLIENTS = ["client-x", "client-y"];
    const RIDS = ["r1", "r2", "r3", "r4", "r5", "r6"];
    /** node-d registers with the other credential, so a stale credential meets a live key. */
    const credOf = (node: string) => (node.startsWith("node-d") ? OTHER : CRED);
    const STATUSES: TerminalStatus[] = ["cancelled", "expired"];

    test.each(Array.from({ length: 24 }, (_, i) => i + 1))("random sequence, seed %i", async (seed) => {
      const rnd = prng(seed);
      const memClock = new ManualClock();
      const redisClock = new ManualClock();
      const memEvents = recorder();
      const redisEvents = recorder();
      const mem: V1Store = new MemoryV1Store(LIMITS, memClock, memEvents);
      const { store: red, client, keyPrefix } = redisStore({ clock: redisClock, limits: LIMITS, events: redisEvents });
      // What each side handed out, to hand back (release/unretrieve name the item, not the object).
      let claimed: { node: string; mem: Envelope; red: Envelope } | undefined;
      const log: string[] = [];
      // The last tracked work claimed: control, progress and cancel aim at it most of the time.
      let held: { node: string; client: string; rid: string } | undefined;
      for (let step = 0; step < 250; step++) {
        const aim = held !== undefined && rnd.next() < 0.6 ? held : undefined;
        const node = aim?.node ?? rnd.pick(NODES);
        const client = aim?.client ?? rnd.pick(CLIENTS);
        const rid = aim?.rid ?? (rnd.next() < 0.1 ? undefined : rnd.pick(RIDS));
        const op = rnd.next() < 0.12 ? 0 : rnd.int(17);
        let call: (s: V1Store, side: "mem" | "red") => Promise<unknown>;
        let name: string;
        switch (op) {
          case 0: {
            const caps = rnd.pick([CAPS, CAPS_64K, CAPS_2]);
            name = `register ${node}`;
            call = (s) => s.register(node, caps, credOf(node));
            break;
          }
          case 1:
          case 2: {
            const caps = rnd.next() < 0.2 ? CAPS_64K : undefined;
            const hold = rnd.pick([0, 0, 400, 1_500]);
            name = `claim ${node} hold ${hold}`;
            call = async (s, side) => {
              const r = await s.claim(node, caps, hold);
              if (r.kind === "work") {
                claimed = { ...(claimed ?? { mem: r.envelope, red: r.envelope }), node, [side]: r.envelope };
                const { client_public_key: c, request_id: id } = r.envelope;
                if (id !== undefined) held = { node, client: c, rid: id };
              }
              return r;
            };
            break;
          }
          case 3: {
            if (!claimed) continue;
            const c = claimed;
            claimed = undefined;
            name = `release ${c.node} ${c.mem.request_id}`;
            call = (s, side) => s.release(c.node, c[side]);
            break;
          }
          case 4: {
            const tier = rnd.pick(["8k-fast", "64k-full"] as const);
            const maxQueueDepth = rnd.pick([1, 2, 1024]);
            name = `select ${tier} depth ${maxQueueDepth}`;
            call = (s) => s.select({ model: "qwen3-8b-instruct", tier, maxQueueDepth });
            break;
          }
          case 5:
          case 6: {
            const deadline = rnd.pick([300, 800, 3_000]);
            const depth = rnd.pick([2, 1024]);
            const proof = rnd.next() < 0.8 ? PROOF : undefined;
            // Two client addresses (and unowned admissions), so both byte shares and the budget are reached.
            const owner = rnd.pick(["198.51.100.1", "198.51.100.2", undefined]);
            name = `enqueue ${node} ${client} ${rid} deadline ${deadline} from ${owner}`;
            const text = rnd.pick(["Y2lwaGVy", "Y2lwaGVy".repeat(8)]);
            call = (s) => s.enqueue(node, env(client, rid, text), proof, deadline, depth, owner);
            break;
          }
          case 7: {
            const r = rid ?? "r1";
            const digest = rnd.next() < 0.8 ? credOf(node) : rnd.pick([CRED, OTHER, undefined]);
            const ack = rnd.next() < 0.3;
            name = `control ${node} ${r} ack ${ack}`;
            call = (s) => s.control(node, r, digest, ack);
            break;
          }
          case 8: {
            const proof = rnd.pick([{ credentialDigest: CRED }, { credentialDigest: OTHER }, "operator" as const]);
            name = `unregister ${node}`;
            call = (s) => s.unregister(node, proof);
            break;
          }
          case 9:
          case 10: {
            const text = rnd.pick(["YQ==", "Yg==", "YW5zd2Vy".repeat(6)]);
            name = `respond ${client} ${rid}`;
            call = (s) => s.respond(env(client, rid, text));
            break;
          }
          case 11: {
            const r = rid ?? "r1";
            const digest = rnd.next() < 0.8 ? credOf(node) : rnd.pick([CRED, OTHER]);
            name = `progress ${node} ${client} ${r}`;
            call = (s) =>
              s.progress(node, digest, { client_public_key: client, request_id: r, protocol: "tokenplace_api_v1_relay_e2ee", version: 1, ciphertext: "cA==".repeat(1 + (step % 9)), cipherkey: "aw==", iv: "aQ==" });
            break;
          }
          case 12: {
            const giveBack = rnd.next() < 0.3;
            name = `retrieve ${client} ${rid} giveBack ${giveBack}`;
            call = async (s) => {
              const r = await s.retrieve(client, rid);
              // As the handler does when the client left: straight back.
              if (giveBack && r.kind === "answer") await s.unretrieve(r.envelope);
              return r;
            };
            break;
          }
          case 13: {
            const r = rid ?? "r1";
            const proof = rnd.pick([PROOF, PROOF, OTHER]);
            const status = rnd.pick(STATUSES);
            name = `cancel ${client} ${r} ${status}`;
            call = (s) => s.cancel(client, r, proof, status, "requester_cancelled");
            break;
          }
          case 14:
            name = "sweep";
            call = (s) => s.sweep();
            break;
          case 15:
            name = "stats + diagnostics";
            call = async (s) => ({ stats: await s.stats(), nodes: await s.diagnostics() });
            break;
          default: {
            const ms = rnd.pick([1, 50, 100, 250, 499, 500, 700, 1_001]);
            name = `advance ${ms}`;
            call = async () => {
              memClock.advance(ms);
              redisClock.advance(ms);
            };
          }
        }
        log.push(`${step}: ${name}`);
        const m = await call(mem, "mem");
        const r = await call(red, "red");
        if (!Bun.deepEquals(r, m)) {
          throw new Error(`seed ${seed} diverged at ${log.slice(-12).join("\n")}\nmemory: ${JSON.stringify(m)}\nredis:  ${JSON.stringify(r)}`);
        }
        expect(redisEvents.evictions).toEqual(memEvents.evictions);
        expect(redisEvents.outcomes).toEqual(memEvents.outcomes);
        expect(redisEvents.drops).toEqual(memEvents.drops);
      }
      // Then everything ends and expires: the datastore holds nothing of it any more.
      for (const node of NODES) await red.unregister(node, "operator");
      redisClock.advance(10 * 60_000);
      await red.sweep();
      expect((await keysUnder(client, keyPrefix)).filter((k) => !SINGLETONS.includes(k))).toEqual([]);
    });
  });

  test("past the record cap the oldest terminal records are forgotten first, as in memory (ties by creation)", async () => {
    const limits = { ...TEST_LIMITS, maxRequests: 2 };
    const memClock = new ManualClock();
    const redisClock = new ManualClock();
    const mem = new MemoryV1Store(limits, memClock, recorder());
    const { store: red } = redisStore({ clock: redisClock, limits });
    const ids = Array.from({ length: 45 }, (_, i) => `r${i}`);
    for (const s of [mem, red]) await s.register("n", CAPS, CRED);
    for (const [i, id] of ids.entries()) {
      for (const s of [mem, red]) {
        await s.enqueue("n", env("c", id), PROOF, 60_000, 1024);
        if (i % 3 === 0) await s.claim("n", undefined, 0);
        await s.cancel("c", id, PROOF, "cancelled", "requester_cancelled");
      }
      // Several records per millisecond: the cap must follow creation order, not the member names.
      if (i % 4 === 3) for (const c of [memClock, redisClock]) c.advance(1);
    }
    const seen = async (s: V1Store) => Promise.all(ids.map(async (id) => (await s.retrieve("c", id)).kind));
    const expected = await seen(mem);
    expect(expected.filter((k) => k === "terminal").length).toBe(20);
    expect(await seen(red)).toEqual(expected);
  });

  /** Fixed-size keys that stay: two sequence counters and the round-robin cursors (capped). */
  const SINGLETONS = ["{v1}:rr", "{v1}:rrg", "{v1}:rseq", "{v1}:seq"];

  test("once everything has ended and expired, only the fixed keys remain under the prefix", async () => {
    const clock = new ManualClock();
    const { store, client, keyPrefix } = redisStore({ clock });
    const a = "node-a";
    const b = "node-b";
    await store.register(a, CAPS, CRED);
    await store.register(b, CAPS_2, CRED);
    // Every kind of record: queued, in flight with progress, answered, cancelled (tombstone),
    // untracked queued and answered, a lease-protected stale node, round-robin cursors.
    // Each charged to a client address, so the per-address counters must be gone too.
    for (const rid of ["q1", "q2", "f1", "f2", "f3", "ans"]) await store.enqueue(a, env("c1", rid), PROOF, 60_000, 1024, "192.0.2.1");
    await store.enqueue(b, env("c2"), undefined, 0, 1024, "192.0.2.2");
    await store.enqueue(b, env("c2", "b1"), PROOF, 60_000, 1024, "192.0.2.2");
    for (let i = 0; i < 4; i++) await store.claim(a, undefined, 0);
    await store.claim(b, undefined, 0);
    await store.progress(a, CRED, { client_public_key: "c1", request_id: "f2", protocol: "tokenplace_api_v1_relay_e2ee", version: 1, ciphertext: "cA==", cipherkey: "aw==", iv: "aQ==" });
    await store.cancel("c1", "f1", PROOF, "cancelled", "requester_cancelled");
    await store.respond(env("c1", "f3"));
    await store.respond(env("c3"));
    await store.select(q8k);
    await store.select(q8k);
    await store.control(a, "f2", CRED, false);
    expect((await keysUnder(client, keyPrefix)).length).toBeGreaterThan(20);
    // Node b is unregistered; node a goes silent and is evicted once its leases lapse.
    await store.unregister(b, { credentialDigest: CRED });
    for (let i = 0; i < 40; i++) {
      clock.advance(30_000);
      await store.sweep();
    }
    expect(await store.stats()).toEqual({ nodes: 0, healthyNodes: 0, queued: 0, oldestQueuedAgeSeconds: 0, inFlight: 0, oldestInFlightAgeSeconds: 0, oldestLeaseAgeSeconds: 0, answers: 0, storedBytes: 0, clientsHoldingBytes: 0 });
    expect(await keysUnder(client, keyPrefix)).toEqual(SINGLETONS);
  });

  test("per-address counters an older replica left behind (it never released them) are cleared once no request is live", async () => {
    const clock = new ManualClock();
    const { store, client, keyPrefix } = redisStore({ clock, limits: { maxStoredBytesPerClient: 1_000 } });
    await store.register("n", CAPS, CRED);
    // As if an old replica had ended a request without releasing its owner's bytes.
    await client.hincrby(`${keyPrefix}{v1}:cbytes`, sha256Hex("198.51.100.9"), 1_000);
    expect(await store.enqueue("n", env("c", "r1"), PROOF, 60_000, 1024, "198.51.100.9")).toBe("client_storage_full");
    expect(await store.enqueue("n", env("c", "r2"), PROOF, 60_000, 1024, "198.51.100.1")).toBe("queued");
    // A live request: the sweep cannot tell drift from what is charged, and leaves the counters.
    await store.sweep();
    expect((await store.stats()).clientsHoldingBytes).toBe(2);
    await store.cancel("c", "r2", PROOF, "cancelled", "requester_cancelled");
    await store.sweep();
    expect((await store.stats()).clientsHoldingBytes).toBe(0);
    expect(await store.enqueue("n", env("c", "r1"), PROOF, 60_000, 1024, "198.51.100.9")).toBe("queued");
  });

  test("a lease-protected stale node is evicted as soon as its last lease lapses or its work ends", async () => {
    const clock = new ManualClock();
    const events = recorder();
    const { store } = redisStore({ clock, events });
    const n = "node";
    await store.register(n, CAPS, CRED);
    await store.enqueue(n, env("c", "r"), PROOF, 600_000, 1024);
    await store.claim(n, undefined, 0);
    // Stale, but control keeps renewing the accounting lease: sweep postpones, never evicts.
    for (let i = 0; i < 5; i++) {
      clock.advance(20_000);
      expect((await store.control(n, "r", CRED, false)).kind).toBe("active");
      await store.sweep();
    }
    expect(events.evictions).toEqual([]);
    // The answer ends the work: the next sweep evicts, without waiting for the old lease.
    await store.respond(env("c", "r"));
    await store.sweep();
    expect(events.evictions).toEqual(["stale_lease"]);
    // And with no answer, the lapse of the last lease is enough.
    await store.register("other", CAPS, CRED);
    await store.enqueue("other", env("c", "r2"), PROOF, 600_000, 1024);
    await store.claim("other", undefined, 0);
    clock.advance(20_000);
    expect((await store.control("other", "r2", CRED, false)).kind).toBe("active");
    // Stale from here on; its lease (renewed 20 s in) runs 20 s longer than its registration.
    clock.advance(TEST_LIMITS.leaseMs - 20_000 + 1);
    await store.sweep();
    expect(events.evictions).toEqual(["stale_lease"]);
    clock.advance(19_998);
    await store.sweep();
    expect(events.evictions).toEqual(["stale_lease"]);
    // The lease counts while it ends after now (spec §7.3): at its end the node is evictable.
    clock.advance(1);
    await store.sweep();
    expect(events.evictions).toEqual(["stale_lease", "stale_lease"]);
    expect(await store.retrieve("c", "r2")).toEqual({ kind: "terminal", status: "cancelled", reason: "server_unregistered" });
  });

  test("replicas share one state: what one admits another claims, answers and delivers", async () => {
    const clock = new ManualClock();
    const prefix = uniqueRedisPrefix();
    const a = redisStore({ clock, prefix }).store;
    const b = redisStore({ clock, prefix }).store;
    await a.register("n", CAPS, CRED);
    expect(await b.register("n", CAPS, OTHER)).toEqual({ kind: "registered", credentialIssued: false });
    expect(await b.enqueue("n", env("c", "r"), PROOF, 10_000, 1024)).toBe("queued");
    expect(await a.enqueue("n", env("c", "r"), PROOF, 10_000, 1024)).toBe("duplicate");
    const work = await a.claim("n", undefined, 0);
    expect(work).toEqual({ kind: "work", envelope: env("c", "r"), remainingMs: 10_000 });
    await b.release("n", env("c", "r"));
    expect((await b.claim("n", undefined, 0)).kind).toBe("work");
    expect(await a.respond(env("c", "r", "YW5zd2Vy"))).toEqual({ kind: "accepted" });
    expect(await b.retrieve("c", "r")).toEqual({ kind: "answer", envelope: env("c", "r", "YW5zd2Vy") });
    expect(await a.retrieve("c", "r")).toEqual({ kind: "unknown" });
  });

  /**
   * A store publishing its wake-ups on a channel, another replica's notifier listening (its held
   * requests must wake with nobody calling notify()), node "n" registered, and `fired(sub)`: whether
   * a subscription was woken within 500 ms.
   */
  async function wakeReplicas() {
    const clock = new ManualClock();
    const keyPrefix = uniqueRedisPrefix();
    const store = new RedisV1Store(
      redisTestClient(),
      { keyPrefix, limits: TEST_LIMITS, clock, commandTimeoutMs: REDIS_COMMAND_TIMEOUT_MS, wakeChannel: wakeChannel(keyPrefix) },
      recorder(),
    );
    const other = new RedisNotifier(redisTestClient("publisher"), redisTestClient("subscriber"), keyPrefix);
    await Bun.sleep(100); // its subscription is made once the connection is ready
    await store.register("n", CAPS, CRED);
    const fired = (sub: { fired: Promise<void> }) => Promise.race([sub.fired.then(() => true), Bun.sleep(500).then(() => false)]);
    return { clock, store, other, fired };
  }

  test("with a wake channel, enqueue and respond publish their wake-up in their own script, only when someone may wait; refusals publish nothing", async () => {
    const { clock, store, other, fired } = await wakeReplicas();
    expect(store.publishesWakes).toBe(true);
    try {
      expect(await store.enqueue("ghost", env("c", "x"), PROOF, 10_000, 1024)).toBe("unknown_node");
      expect(await fired(other.subscribe(v1Topics.node("ghost")))).toBe(false);

      // No poll found the queue empty: nobody can be held for this node, nothing is published.
      const unheld = other.subscribe(v1Topics.node("n"));
      expect(await store.enqueue("n", env("c", "first"), PROOF, 10_000, 1024)).toBe("queued");
      expect(await fired(unheld)).toBe(false);
      expect((await store.claim("n", undefined, 5_000)).kind).toBe("work");
      // A poll that finds nothing may be held (on any replica) for its hold and a margin: wake it.
      expect((await store.claim("n", undefined, 5_000)).kind).toBe("empty");
      const pollWoken = other.subscribe(v1Topics.node("n"));
      expect(await store.enqueue("n", env("c", "r"), PROOF, 10_000, 1024)).toBe("queued");
      expect(await fired(pollWoken)).toBe(true);
      // Past the hold and its margin nobody waits any more.
      clock.advance(5_000 + 1_000 + 1);
      const lapsed = other.subscribe(v1Topics.node("n"));
      expect(await store.enqueue("n", env("c", "late"), PROOF, 10_000, 1024)).toBe("queued");
      expect(await fired(lapsed)).toBe(false);

      // An answer nobody looked for yet publishes nothing; one whose retrieve found it pending does.
      const unasked = other.subscribe(v1Topics.request("c", "first"));
      expect(await store.respond(env("c", "first", "YW5zd2Vy"))).toEqual({ kind: "accepted" });
      expect(await fired(unasked)).toBe(false);
      expect((await store.retrieve("c", "r")).kind).toBe("pending");
      const retrieveWoken = other.subscribe(v1Topics.request("c", "r"));
      expect(await store.respond(env("c", "r", "YW5zd2Vy"))).toEqual({ kind: "accepted" });
      expect(await fired(retrieveWoken)).toBe(true);
      const late = other.subscribe(v1Topics.request("c", "r"));
      expect((await store.respond(env("c", "r", "YW5zd2Vy"))).kind).toBe("duplicate");
      expect(await fired(late)).toBe(false);
    } finally {
      other.close();
    }
  });

  test("the wake mark only grows: a poll's last look (hold 0) or a shorter poll never shortens it under a longer poll held elsewhere", async () => {
    const { clock, store, other, fired } = await wakeReplicas();
    try {
      // Poll X held for 10 s (replica 1); at 7 s poll Z held for 10 s (replica 2); at 10 s X's last
      // look (hold 0) and a short poll; at 12 s a request: Z (held until 17 s) must be woken.
      expect((await store.claim("n", undefined, 10_000)).kind).toBe("empty");
      clock.advance(7_000);
      expect((await store.claim("n", undefined, 10_000)).kind).toBe("empty");
      clock.advance(3_000);
      expect((await store.claim("n", undefined, 0)).kind).toBe("empty");
      expect((await store.claim("n", undefined, 1_000)).kind).toBe("empty");
      clock.advance(2_000);
      const z = other.subscribe(v1Topics.node("n"));
      expect(await store.enqueue("n", env("c", "late"), PROOF, 10_000, 1024)).toBe("queued");
      expect(await fired(z)).toBe(true);
    } finally {
      other.close();
    }
  });

  test("racing replicas: exactly one terminal transition wins for each request (spec §7.8)", async () => {
    const clock = new ManualClock();
    const prefix = uniqueRedisPrefix();
    const events = [recorder(), recorder(), recorder()];
    const replicas = events.map((e) => redisStore({ clock, prefix, events: e, limits: { maxRequests: 500, maxAnswers: 500 } }).store);
    const [a, b, c] = [replicas[0]!, replicas[1]!, replicas[2]!];
    await a.register("n", CAPS, CRED);
    const ids = Array.from({ length: 60 }, (_, i) => `r${i}`);
    for (const id of ids) await a.enqueue("n", env("c", id), PROOF, 60_000, 1024);
    for (let i = 0; i < 30; i++) await b.claim("n", undefined, 0);
    const results = await Promise.all(
      ids.map(async (id) => {
        const [answered, cancelled, again] = await Promise.all([
          a.respond(env("c", id)),
          b.cancel("c", id, PROOF, "cancelled", "requester_cancelled"),
          c.respond(env("c", id, "c2Vjb25k")),
        ]);
        return { id, answered, cancelled, again };
      }),
    );
    for (const { answered, cancelled, again } of results) {
      const answers = [answered, again].filter((r) => r.kind === "accepted").length;
      const cancels = cancelled.kind === "cancelled" ? 1 : 0;
      expect(answers + cancels).toBe(1);
    }
    const outcomes = events.flatMap((e) => e.outcomes);
    expect(outcomes.length).toBe(ids.length);
    const stats = await c.stats();
    expect(stats.queued + stats.inFlight).toBe(0);
    expect(stats.answers).toBe(outcomes.filter((o) => o === "completed").length);
  });

  test("without an injected clock the datastore's TIME is the clock", async () => {
    const { store } = redisStore();
    const before = Date.now();
    await store.register("n", CAPS, CRED);
    await store.enqueue("n", env("c", "r"), PROOF, 5_000, 1024);
    const work = await store.claim("n", undefined, 0);
    if (work.kind !== "work") throw new Error(work.kind);
    expect(work.remainingMs).toBeGreaterThan(4_000);
    expect(work.remainingMs).toBeLessThanOrEqual(5_000);
    await Bun.sleep(30);
    const control = await store.control("n", "r", CRED, false);
    expect(control.kind === "active" && control.remainingMs).toBeLessThan(work.remainingMs!);
    const [view] = await store.diagnostics();
    expect(view!.ageSeconds).toBeGreaterThanOrEqual(0);
    expect(view!.ageSeconds).toBeLessThan((Date.now() - before) / 1000 + 1);
  });

  test("a backlog larger than one batch is swept in bounded script runs", async () => {
    const clock = new ManualClock();
    const events = recorder();
    const count = SWEEP_BATCH * 2 + 10;
    const { store, client, keyPrefix } = redisStore({ clock, events, limits: { maxAnswers: count } });
    for (let i = 0; i < count; i++) await store.respond(env(`client-${i % 7}`));
    expect((await store.stats()).answers).toBe(count);
    clock.advance(TEST_LIMITS.answerTtlMs);
    await store.sweep();
    expect(events.drops).toEqual([`answer:${SWEEP_BATCH}`, `answer:${SWEEP_BATCH}`, "answer:10"]);
    expect((await store.stats()).answers).toBe(0);
    expect(await keysUnder(client, keyPrefix)).toEqual([]);
  });

  test("8 KB public keys: stored whole, keys named by their digest", async () => {
    const clock = new ManualClock();
    const { store, client, keyPrefix } = redisStore({ clock });
    const node = "N".repeat(8_192);
    const clientKey = "C".repeat(8_192);
    await store.register(node, CAPS, CRED);
    await store.enqueue(node, env(clientKey, "r"), PROOF, 10_000, 1024);
    const work = await store.claim(node, undefined, 0);
    expect(work.kind === "work" && work.envelope.client_public_key).toBe(clientKey);
    await store.respond(env(clientKey, "r"));
    expect((await store.diagnostics())[0]!.key).toBe(node);
    for (const k of await keysUnder(client, keyPrefix)) expect(k.length).toBeLessThan(100);
  });

  test("a datastore that is gone answers 503 state_unavailable within the command timeout", async () => {
    const client = connectRedis({ url: "redis://127.0.0.1:1", keyPrefix: "", commandTimeoutMs: 200 }, "test-down");
    try {
      const store = new RedisV1Store(client, { keyPrefix: uniqueRedisPrefix(), limits: TEST_LIMITS, commandTimeoutMs: 200 }, recorder());
      const started = performance.now();
      const err = await store.select(q8k).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RelayError);
      expect((err as RelayError).status).toBe(503);
      expect((err as RelayError).code).toBe("state_unavailable");
      expect(performance.now() - started).toBeLessThan(2_000);
    } finally {
      client.disconnect();
    }
  });
});
