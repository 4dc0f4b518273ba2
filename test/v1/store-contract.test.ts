// The V1Store contract (token.place API v1 relay spec §7-8), one suite run against every backend.
import { beforeEach, describe, expect, test } from "bun:test";
import { ManualClock } from "../../src/clock.ts";
import { sha256Hex } from "../../src/common/tokens.ts";
import type { Capabilities, Envelope, V1Store } from "../../src/v1/store.ts";
import { envelopeBytes } from "../../src/v1/memory/state.ts";
import { DEFAULT_CAPABILITIES } from "../../src/v1/validate.ts";
import { BACKENDS, TEST_LIMITS, recorder, type Recorded, type TestLimits } from "./backends.ts";

const CAPS: Capabilities = { ...DEFAULT_CAPABILITIES, supported_model_ids: ["qwen3-8b-instruct"], maximum_output_tokens: 8192 };
const CAPS_64K: Capabilities = { ...CAPS, active_context_tier: "64k-full", maximum_total_context_tokens: 65536 };
const CRED = sha256Hex("credential-A");
const OTHER = sha256Hex("credential-B");
const PROOF = sha256Hex("cancel-proof");
const DEADLINE_MS = 480_000;
const DEPTH = 1024;

let seq = 0;
const key = (label: string) => `${label}-key-${++seq}-${"x".repeat(20)}`;
const env = (clientKey: string, requestId?: string): Envelope => ({
  client_public_key: clientKey,
  chat_history: "Y2lwaGVy",
  cipherkey: "a2V5",
  iv: "aXY=",
  ...(requestId === undefined ? {} : { request_id: requestId, protocol: "tokenplace_api_v1_relay_e2ee", version: 1 }),
});

for (const backend of BACKENDS) {
  const why = backend.unavailable?.();
  describe.skipIf(why !== undefined)(`V1Store contract: ${backend.name}`, () => {
    let clock: ManualClock;
    let events: Recorded;
    let store: V1Store;
    beforeEach(async () => {
      clock = new ManualClock();
      events = recorder();
      store = await backend.make(clock, events);
    });
    /** null: admitted without a cancel proof. */
    const admit = async (node: string, client: string, rid: string, proof: string | null = PROOF) =>
      expect(await store.enqueue(node, env(client, rid), proof ?? undefined, DEADLINE_MS, DEPTH)).toBe("queued");
    const registered = async (caps = CAPS, cred = CRED) => {
      const n = key("node");
      expect(await store.register(n, caps, cred)).toEqual({ kind: "registered", credentialIssued: true });
      return n;
    };

    describe("register", () => {
      test("a new key gets a credential; renewing never rotates it and replaces capabilities", async () => {
        const n = await registered();
        expect(await store.register(n, CAPS_64K, OTHER)).toEqual({ kind: "registered", credentialIssued: false });
        expect((await store.diagnostics())[0]!.capabilities.active_context_tier).toBe("64k-full");
        expect((await store.control(n, "nothing", CRED, false)).kind).toBe("completed_unavailable");
        expect((await store.control(n, "nothing", OTHER, false)).kind).toBe("forbidden");
      });

      test("after the lease lapses the key registers afresh with a new credential", async () => {
        const n = await registered();
        clock.advance(TEST_LIMITS.leaseMs + 1);
        expect(await store.register(n, CAPS, OTHER)).toEqual({ kind: "registered", credentialIssued: true });
        expect((await store.control(n, "x", OTHER, false)).kind).toBe("completed_unavailable");
        expect(events.evictions).toEqual(["stale_lease"]);
      });

      test("the node bound answers nodes_full and registers nothing", async () => {
        const small = await backend.make(clock, events, { maxNodes: 2 });
        for (let i = 0; i < 2; i++) expect((await small.register(key("n"), CAPS, CRED)).kind).toBe("registered");
        expect(await small.register(key("n"), CAPS, CRED)).toEqual({ kind: "nodes_full" });
        expect((await small.stats()).nodes).toBe(2);
      });
    });

    describe("enqueue and claim", () => {
      test("FIFO per node, each request claimed exactly once", async () => {
        const n = await registered();
        const c = key("client");
        for (const rid of ["r1", "r2", "r3"]) await admit(n, c, rid);
        const got: string[] = [];
        for (let i = 0; i < 3; i++) {
          const r = await store.claim(n, undefined, 0);
          if (r.kind !== "work") throw new Error(`expected work, got ${r.kind}`);
          got.push(r.envelope.request_id!);
          expect(r.remainingMs).toBe(DEADLINE_MS);
        }
        expect(got).toEqual(["r1", "r2", "r3"]);
        expect(await store.claim(n, undefined, 0)).toEqual({ kind: "empty" });
        expect((await store.stats()).inFlight).toBe(3);
      });

      test("unknown node: enqueue and claim say so", async () => {
        expect(await store.enqueue(key("ghost"), env(key("c"), "r"), undefined, 1000, DEPTH)).toBe("unknown_node");
        expect(await store.claim(key("ghost"), undefined, 0)).toEqual({ kind: "unknown_node" });
      });

      test("bounds: per-node queue depth, live requests in total, and a live id is never admitted twice", async () => {
        const small = await backend.make(clock, events, { maxRequests: 3 });
        const n = key("node");
        await small.register(n, CAPS, CRED);
        const c = key("c");
        const put = (rid: string, depth = DEPTH) => small.enqueue(n, env(c, rid), undefined, 1000, depth);
        expect(await put("a", 1)).toBe("queued");
        expect(await put("b", 1)).toBe("queue_full");
        expect(await put("a")).toBe("duplicate");
        expect(await put("b")).toBe("queued");
        expect(await put("c")).toBe("queued");
        expect(await put("d")).toBe("requests_full");
      });

      test("a dead request at the queue head is expired and the claim goes on", async () => {
        const n = await registered();
        const c = key("c");
        await store.enqueue(n, env(c, "old"), PROOF, 1000, DEPTH);
        clock.advance(500);
        await admit(n, c, "new");
        clock.advance(600);
        const r = await store.claim(n, undefined, 0);
        expect(r.kind === "work" && r.envelope.request_id).toBe("new");
        expect(await store.retrieve(c, "old")).toEqual({ kind: "terminal", status: "expired", reason: "provider_timeout" });
        expect(events.outcomes).toEqual(["expired"]);
      });

      test("release puts a claimed request back at the head, and it is claimable again", async () => {
        const n = await registered();
        const c = key("c");
        await admit(n, c, "r1");
        await admit(n, c, "r2");
        const r = await store.claim(n, undefined, 0);
        if (r.kind !== "work") throw new Error("expected work");
        await store.release(n, r.envelope);
        expect((await store.stats()).inFlight).toBe(0);
        const again = await store.claim(n, undefined, 0);
        expect(again.kind === "work" && again.envelope.request_id).toBe("r1");
      });

      test("untracked requests (no request_id) are delivered and matched by client key", async () => {
        const n = await registered();
        const c = key("c");
        expect(await store.enqueue(n, env(c), undefined, 0, DEPTH)).toBe("queued");
        const r = await store.claim(n, undefined, 0);
        expect(r).toEqual({ kind: "work", envelope: env(c) });
        expect(await store.respond(env(c))).toEqual({ kind: "accepted" });
        expect(await store.retrieve(c, undefined)).toEqual({ kind: "answer", envelope: env(c) });
        expect(await store.retrieve(c, undefined)).toEqual({ kind: "unknown" });
      });
    });

    describe("control", () => {
      test("active for held work, renewing the accounting lease but never past the deadline", async () => {
        const n = await registered();
        const c = key("c");
        await store.enqueue(n, env(c, "r"), PROOF, 40_000, DEPTH);
        await store.claim(n, undefined, 0);
        clock.advance(25_000);
        expect(await store.control(n, "r", CRED, false)).toEqual({ kind: "active", remainingMs: 15_000 });
        // The node stops polling while it infers: stale, but its renewed lease keeps it registered.
        clock.advance(10_000);
        await store.sweep();
        expect((await store.stats()).nodes).toBe(1);
        expect((await store.select({ model: "qwen3-8b-instruct", tier: "8k-fast", maxQueueDepth: DEPTH })).kind).toBe("no_matching_compute_node");
      });

      test("wrong credential: forbidden; unknown node without tombstone: forbidden", async () => {
        const n = await registered();
        expect((await store.control(n, "r", OTHER, false)).kind).toBe("forbidden");
        expect((await store.control(n, "r", undefined, false)).kind).toBe("forbidden");
        expect((await store.control(key("ghost"), "r", CRED, false)).kind).toBe("forbidden");
      });

      test("past the deadline the request expires at control: tombstone 'expired', then acknowledged away", async () => {
        const n = await registered();
        const c = key("c");
        await store.enqueue(n, env(c, "r"), PROOF, 5_000, DEPTH);
        await store.claim(n, undefined, 0);
        clock.advance(5_000);
        expect(await store.control(n, "r", CRED, false)).toMatchObject({ kind: "tombstone", status: "expired" });
        expect(await store.control(n, "r", CRED, true)).toMatchObject({ kind: "tombstone", status: "expired" });
        expect((await store.control(n, "r", CRED, false)).kind).toBe("completed_unavailable");
        expect(await store.retrieve(c, "r")).toEqual({ kind: "terminal", status: "expired", reason: "provider_timeout" });
      });

      test("tombstones lapse after their TTL", async () => {
        const n = await registered();
        const c = key("c");
        await admit(n, c, "r");
        await store.claim(n, undefined, 0);
        await store.cancel(c, "r", PROOF, "cancelled", "client_timeout");
        expect(await store.control(n, "r", CRED, false)).toMatchObject({ kind: "tombstone", status: "cancelled" });
        // Keep the node registered (held in a poll) while the tombstone ages.
        await store.claim(n, undefined, 2 * TEST_LIMITS.tombstoneTtlMs);
        clock.advance(TEST_LIMITS.tombstoneTtlMs);
        await store.sweep();
        expect((await store.control(n, "r", CRED, false)).kind).toBe("completed_unavailable");
      });
    });

    describe("unregister and eviction", () => {
      test("unregister needs the credential; queued work is cancelled, in-flight work tombstoned", async () => {
        const n = await registered();
        const c = key("c");
        await admit(n, c, "inflight");
        await admit(n, c, "queued");
        await store.claim(n, undefined, 0);
        expect(await store.unregister(n, { credentialDigest: OTHER })).toBe("forbidden");
        expect(await store.unregister(n, { credentialDigest: CRED })).toBe("removed");
        expect(await store.unregister(n, { credentialDigest: CRED })).toBe("not_found");
        for (const rid of ["inflight", "queued"]) {
          expect(await store.retrieve(c, rid)).toEqual({ kind: "terminal", status: "cancelled", reason: "server_unregistered" });
        }
        // The tombstone answers the old owner only.
        expect(await store.control(n, "inflight", CRED, false)).toMatchObject({ kind: "tombstone", status: "cancelled" });
        expect((await store.control(n, "inflight", OTHER, false)).kind).toBe("forbidden");
        expect(await store.claim(n, undefined, 0)).toEqual({ kind: "unknown_node" });
        expect(events.evictions).toEqual(["unregistered"]);
      });

      test("operator unregister needs no credential", async () => {
        const n = await registered();
        expect(await store.unregister(n, "operator")).toBe("removed");
      });

      test("a stale node is evicted by sweep; a node held in a poll is never stale", async () => {
        const held = await registered();
        const idle = await registered();
        await store.claim(held, undefined, 60_000);
        clock.advance(TEST_LIMITS.leaseMs + 1);
        await store.sweep();
        expect((await store.diagnostics()).map((d) => d.key)).toEqual([held]);
        expect(await store.claim(idle, undefined, 0)).toEqual({ kind: "unknown_node" });
        expect(events.evictions).toEqual(["stale_lease"]);
      });
    });

    describe("respond and retrieve", () => {
      test("exactly once: the first answer is kept, delivered once, then the pair is completed", async () => {
        const n = await registered();
        const c = key("c");
        await admit(n, c, "r");
        await store.claim(n, undefined, 0);
        expect(await store.retrieve(c, "r")).toEqual({ kind: "pending", remainingMs: DEADLINE_MS, progress: undefined });
        const answer = { ...env(c, "r"), chat_history: "YW5zd2Vy" };
        expect(await store.respond(answer)).toEqual({ kind: "accepted" });
        expect(await store.respond({ ...answer, chat_history: "c2Vjb25k" })).toEqual({ kind: "duplicate" });
        expect(await store.cancel(c, "r", PROOF, "cancelled", "cancelled")).toEqual({ kind: "forbidden" });
        expect(await store.retrieve(c, "r")).toEqual({ kind: "answer", envelope: answer });
        expect(await store.retrieve(c, "r")).toEqual({ kind: "unknown" });
        expect(await store.respond(answer)).toEqual({ kind: "gone", status: "completed" });
        expect((await store.stats()).inFlight).toBe(0);
        expect(events.outcomes).toEqual(["completed"]);
        clock.advance(TEST_LIMITS.terminalTtlMs);
        await store.sweep();
        expect(await store.respond(answer)).toEqual({ kind: "gone", status: "gone" });
      });

      test("an answer for a request that is still queued is accepted and dequeues it", async () => {
        const n = await registered();
        const c = key("c");
        await admit(n, c, "r");
        expect(await store.respond(env(c, "r"))).toEqual({ kind: "accepted" });
        expect(await store.claim(n, undefined, 0)).toEqual({ kind: "empty" });
      });

      test("unretrieve stores a taken answer again (failed hand-over)", async () => {
        const n = await registered();
        const c = key("c");
        await admit(n, c, "r");
        await store.respond(env(c, "r"));
        const got = await store.retrieve(c, "r");
        if (got.kind !== "answer") throw new Error("expected the answer");
        await store.unretrieve(got.envelope);
        expect(await store.retrieve(c, "r")).toEqual(got);
      });

      test("past the deadline: retrieve and respond both see expired, and the answer is refused", async () => {
        const n = await registered();
        const c = key("c");
        await admit(n, c, "r");
        clock.advance(DEADLINE_MS);
        expect(await store.respond(env(c, "r"))).toEqual({ kind: "gone", status: "expired" });
        expect(await store.retrieve(c, "r")).toEqual({ kind: "terminal", status: "expired", reason: "pending_request_ttl_exceeded" });
      });

      test("uncollected answers expire and the count returns to zero", async () => {
        const n = await registered();
        const c = key("c");
        await admit(n, c, "r");
        await store.respond(env(c, "r"));
        expect((await store.stats()).answers).toBe(1);
        clock.advance(TEST_LIMITS.answerTtlMs);
        await store.sweep();
        expect((await store.stats()).answers).toBe(0);
        expect(events.drops).toEqual(["answer:1"]);
      });

      test("the answer bound refuses with answers_full and keeps the request live", async () => {
        const small = await backend.make(clock, events, { maxAnswers: 1 });
        const n = key("n");
        await small.register(n, CAPS, CRED);
        const c = key("c");
        for (const rid of ["a", "b"]) await small.enqueue(n, env(c, rid), undefined, 10_000, DEPTH);
        expect(await small.respond(env(c, "a"))).toEqual({ kind: "accepted" });
        expect(await small.respond(env(c, "b"))).toEqual({ kind: "answers_full" });
        expect((await small.retrieve(c, "b")).kind).toBe("pending");
      });
    });

    describe("progress", () => {
      const update = (c: string, rid: string) => ({
        client_public_key: c, request_id: rid, protocol: "tokenplace_api_v1_relay_e2ee", version: 1, ciphertext: "cA==", cipherkey: "aw==", iv: "aQ==",
      });
      test("only the owner, only in flight; the latest update is read once", async () => {
        const n = await registered();
        const c = key("c");
        await admit(n, c, "r");
        expect(await store.progress(n, CRED, update(c, "r"))).toBe("not_active");
        await store.claim(n, undefined, 0);
        expect(await store.progress(n, OTHER, update(c, "r"))).toBe("forbidden");
        expect(await store.progress(n, CRED, update(c, "r"))).toBe("accepted");
        const second = { ...update(c, "r"), ciphertext: "c2Vjb25k" };
        expect(await store.progress(n, CRED, second)).toBe("accepted");
        expect(await store.retrieve(c, "r")).toMatchObject({ kind: "pending", progress: second });
        expect(await store.retrieve(c, "r")).toMatchObject({ kind: "pending", progress: undefined });
        clock.advance(DEADLINE_MS);
        expect(await store.progress(n, CRED, update(c, "r"))).toBe("expired");
      });
    });

    describe("cancel", () => {
      test("queued: removed from the queue; in flight: tombstone for the owner; the proof is required", async () => {
        const n = await registered();
        const c = key("c");
        await admit(n, c, "q");
        await admit(n, c, "f");
        await admit(n, c, "noproof", null);
        expect(await store.cancel(c, "q", OTHER, "cancelled", "cancelled")).toEqual({ kind: "forbidden" });
        expect(await store.cancel(c, "q", PROOF, "cancelled", "requester_cancelled")).toEqual({ kind: "cancelled", removedFromQueue: 1 });
        const r = await store.claim(n, undefined, 0);
        expect(r.kind === "work" && r.envelope.request_id).toBe("f");
        expect(await store.cancel(c, "f", PROOF, "expired", "client_timeout")).toEqual({ kind: "cancelled", removedFromQueue: 0 });
        expect(await store.control(n, "f", CRED, false)).toMatchObject({ kind: "tombstone", status: "expired" });
        expect(await store.cancel(c, "noproof", PROOF, "cancelled", "cancelled")).toEqual({ kind: "forbidden" });
        expect(await store.cancel(c, "q", PROOF, "cancelled", "cancelled")).toEqual({ kind: "forbidden" });
        expect(await store.retrieve(c, "q")).toEqual({ kind: "terminal", status: "cancelled", reason: "requester_cancelled" });
        expect(await store.respond(env(c, "f"))).toEqual({ kind: "gone", status: "expired" });
        expect((await store.stats()).inFlight).toBe(0);
        expect(events.outcomes).toEqual(["cancelled", "expired"]);
      });

      test("a finished id admitted again starts a new life (not the old terminal state)", async () => {
        const n = await registered();
        const c = key("c");
        await admit(n, c, "r");
        await store.cancel(c, "r", PROOF, "cancelled", "cancelled");
        await admit(n, c, "r");
        expect((await store.retrieve(c, "r")).kind).toBe("pending");
      });
    });

    describe("select (best_fit_smallest_capable_least_loaded_v1)", () => {
      const q = { model: "qwen3-8b-instruct", tier: "8k-fast" as const, maxQueueDepth: DEPTH };

      test("no nodes, no match, no capacity", async () => {
        expect(await store.select(q)).toEqual({ kind: "no_registered_compute_nodes" });
        const n = await registered({ ...CAPS, supported_model_ids: ["other-model"] });
        expect(await store.select(q)).toEqual({ kind: "no_matching_compute_node" });
        const busy = await registered();
        await admit(busy, key("c"), "r");
        await store.claim(busy, undefined, 0);
        const r = await store.select(q);
        expect(r.kind).toBe("no_available_capacity");
        expect(n).toBeString();
      });

      test("smallest capable tier first, then least loaded, then round robin among ties", async () => {
        const big = await registered(CAPS_64K);
        const a = await registered();
        const b = await registered();
        const picks: string[] = [];
        for (let i = 0; i < 4; i++) {
          const r = await store.select(q);
          if (r.kind !== "selected") throw new Error(r.kind);
          picks.push(r.node.key);
        }
        expect(new Set(picks)).toEqual(new Set([a, b]));
        expect(picks[0]).not.toBe(picks[1]);
        await admit(a, key("c"), "load");
        const r = await store.select(q);
        expect(r.kind === "selected" && r.node.key).toBe(b);
        const tier64 = await store.select({ ...q, tier: "64k-full" });
        expect(tier64.kind === "selected" && tier64.node.key).toBe(big);
      });

      test("a stale node is never selected", async () => {
        await registered();
        clock.advance(TEST_LIMITS.leaseMs + 1);
        expect((await store.select(q)).kind).toBe("no_matching_compute_node");
      });
    });

    describe("sweep", () => {
      test("queued requests past their deadline expire with pending_request_ttl_exceeded", async () => {
        const n = await registered();
        const c = key("c");
        await admit(n, c, "r");
        clock.advance(DEADLINE_MS);
        await store.sweep();
        expect((await store.stats()).queued).toBe(0);
        expect(await store.retrieve(c, "r")).toEqual({ kind: "terminal", status: "expired", reason: "pending_request_ttl_exceeded" });
        clock.advance(TEST_LIMITS.terminalTtlMs);
        await store.sweep();
        expect(await store.retrieve(c, "r")).toEqual({ kind: "unknown" });
      });

      test("close reports what is lost", async () => {
        const n = await registered();
        await admit(n, key("c"), "r");
        expect(await store.close()).toMatchObject({ nodes: 1, queued: 1 });
      });
    });

    describe("per-address byte share", () => {
      // Requests of one exact size (fixed-length ids), so a share of SHARE_REQUESTS of them is exact.
      const SHARE_REQUESTS = 4;
      const unit = (client: string, rid = "r000") => envelopeBytes(env(client, rid));
      const A = "198.51.100.1";
      const B = "198.51.100.2";
      /** A store whose per-address share holds exactly SHARE_REQUESTS requests of `client`. */
      const sharedStore = async (client: string, extra: TestLimits = {}) =>
        backend.make(clock, events, { maxStoredBytesPerClient: SHARE_REQUESTS * unit(client), ...extra });
      const put = (s: V1Store, node: string, client: string, rid: string | undefined, owner: string) =>
        s.enqueue(node, env(client, rid), PROOF, DEADLINE_MS, DEPTH, owner);
      /** Admits a full share for `owner`, checks one more is refused, and returns the ids. */
      const fillShare = async (s: V1Store, node: string, client: string, owner: string, tracked = true) => {
        const ids: string[] = [];
        for (let i = 0; i < SHARE_REQUESTS; i++) {
          const rid = `r${String(++seq % 1000).padStart(3, "0")}`;
          ids.push(rid);
          expect(await put(s, node, client, tracked ? rid : undefined, owner)).toBe("queued");
        }
        expect(await put(s, node, client, tracked ? "r999" : undefined, owner)).toBe("client_storage_full");
        return ids;
      };
      const newNode = async (s: V1Store) => {
        const n = key("node");
        expect((await s.register(n, CAPS, CRED)).kind).toBe("registered");
        return n;
      };
      /** The counters are back to nothing: the address fills exactly one share again, not one byte more. */
      const settled = async (s: V1Store, client: string, owner: string) => {
        expect((await s.stats()).clientsHoldingBytes).toBe(0);
        await fillShare(s, await newNode(s), client, owner);
      };

      test("an address holds at most its share; other addresses and unowned requests are still admitted", async () => {
        const c = key("c");
        const s = await sharedStore(c);
        const n = await newNode(s);
        await fillShare(s, n, c, A);
        expect(await put(s, n, c, "rb01", B)).toBe("queued");
        expect(await s.enqueue(n, env(c, "rn01"), PROOF, DEADLINE_MS, DEPTH)).toBe("queued");
        expect((await s.stats()).clientsHoldingBytes).toBe(2);
      });

      test("the global budget still answers storage_full, before the share", async () => {
        const c = key("c");
        const s = await sharedStore(c, { maxStoredBytes: 2 * unit(c) });
        const n = await newNode(s);
        expect(await put(s, n, c, "r001", A)).toBe("queued");
        expect(await put(s, n, c, "r002", B)).toBe("queued");
        expect(await put(s, n, c, "r003", B)).toBe("storage_full");
      });

      type Exit = (s: V1Store, node: string, client: string, ids: string[]) => Promise<void>;
      const claimAll = async (s: V1Store, node: string, count: number) => {
        for (let i = 0; i < count; i++) expect((await s.claim(node, undefined, 0)).kind).toBe("work");
      };
      const exits: [string, Exit][] = [
        ["claimed and answered, answers collected", async (s, n, c, ids) => {
          await claimAll(s, n, ids.length);
          for (const id of ids) expect((await s.respond(env(c, id))).kind).toBe("accepted");
          for (const id of ids) expect((await s.retrieve(c, id)).kind).toBe("answer");
        }],
        ["answered while still queued (answers left uncollected)", async (s, _n, c, ids) => {
          for (const id of ids) expect((await s.respond(env(c, id))).kind).toBe("accepted");
        }],
        ["claimed, released after a failed hand-over, then answered", async (s, n, c, ids) => {
          const r = await s.claim(n, undefined, 0);
          if (r.kind !== "work") throw new Error(r.kind);
          await s.release(n, r.envelope);
          await claimAll(s, n, ids.length);
          for (const id of ids) expect((await s.respond(env(c, id))).kind).toBe("accepted");
        }],
        ["cancelled while queued and in flight", async (s, n, c, ids) => {
          await claimAll(s, n, 2);
          for (const id of ids) expect((await s.cancel(c, id, PROOF, "cancelled", "requester_cancelled")).kind).toBe("cancelled");
        }],
        ["expired by the sweep, queued and in flight", async (s, n) => {
          await claimAll(s, n, 2);
          clock.advance(DEADLINE_MS);
          await s.sweep();
        }],
        ["expired heads dropped by a claim", async (s, n) => {
          // The node renews its lease (no claim) until its queued requests are past their deadline.
          for (let t = 0; t < DEADLINE_MS; t += TEST_LIMITS.leaseMs / 2) {
            clock.advance(TEST_LIMITS.leaseMs / 2);
            await s.register(n, CAPS, CRED);
          }
          expect((await s.claim(n, undefined, 0)).kind).toBe("empty");
        }],
        ["expired when the client retrieves past the deadline", async (s, _n, c, ids) => {
          clock.advance(DEADLINE_MS);
          for (const id of ids) expect((await s.retrieve(c, id)).kind).toBe("terminal");
        }],
        ["dropped with their node (unregistered), queued and in flight", async (s, n) => {
          await claimAll(s, n, 2);
          expect(await s.unregister(n, { credentialDigest: CRED })).toBe("removed");
        }],
        ["dropped with their node (evicted: its lease lapsed)", async (s) => {
          clock.advance(TEST_LIMITS.leaseMs + 1);
          await s.sweep();
          expect((await s.stats()).nodes).toBe(0);
        }],
      ];
      for (const [name, exit] of exits) {
        test(`released exactly on exit: ${name}`, async () => {
          const c = key("c");
          const s = await sharedStore(c);
          const n = await newNode(s);
          const ids = await fillShare(s, n, c, A);
          await exit(s, n, c, ids);
          await settled(s, c, A);
        });
      }

      test("requests without request_id: released when claimed, expired or dropped with their node; a released one is charged to no address", async () => {
        const c = key("c");
        const s = await sharedStore(c);
        const n = await newNode(s);
        await fillShare(s, n, c, A, false);
        const r = await s.claim(n, undefined, 0);
        if (r.kind !== "work") throw new Error(r.kind);
        // One left: one more fits again.
        expect(await put(s, n, c, undefined, A)).toBe("queued");
        expect(await put(s, n, c, undefined, A)).toBe("client_storage_full");
        await s.release(n, r.envelope);
        const other = await newNode(s);
        expect(await put(s, other, c, undefined, A)).toBe("client_storage_full");
        // The sweep expires some (pending TTL) and, the node gone silent, drops the rest with it.
        clock.advance(TEST_LIMITS.pendingTtlMs);
        await s.sweep();
        const left = await s.stats();
        expect(left).toMatchObject({ queued: 0, clientsHoldingBytes: 0, storedBytes: 0 });
        await settled(s, c, A);
      });
    });

    describe("stored bytes of strings that are not plain base64", () => {
      // Peers send base64, but the relay refuses no encoding (src/v1/validate.ts): whatever a
      // string holds, it must be charged at least what it takes in JavaScriptCore (2 bytes per
      // code unit once not ASCII) and as UTF-8 inside the JSON a shared store keeps.
      const N = 3_000;
      const TEXTS: Record<string, string> = {
        euro: "€".repeat(N),
        latin1: "é".repeat(N),
        astral: "𝄞".repeat(N / 2),
        "lone surrogates": "\ud800".repeat(N),
        controls: "\u0001".repeat(N),
        "quotes and backslashes": '"\\'.repeat(N / 2),
        "base64 and one euro": "QUJD".repeat(N / 4 - 1) + "QU€=",
      };
      /** An independent bound for one string: its UTF-8 JSON without the quotes, or its size in memory. */
      const cost = (v: string) => Math.max(Buffer.byteLength(JSON.stringify(v)) - 2, /[^\x00-\x7f]/.test(v) ? 2 * v.length : v.length);
      /** The strings of an envelope or a progress update. */
      type Stored = { client_public_key: string; chat_history?: string; ciphertext?: string; cipherkey: string; iv: string; request_id?: string };
      const fields = (e: Stored) => [e.client_public_key, e.chat_history ?? "", e.ciphertext ?? "", e.cipherkey, e.iv, e.request_id ?? ""];
      const trueCost = (e: Stored) => fields(e).reduce((sum, v) => sum + cost(v), 0);
      /** Plain base64 costs its length: the size an envelope of the same length would be charged by counting characters. */
      const lengthOf = (e: Stored) => fields(e).reduce((sum, v) => sum + v.length, 0);
      const carrying = (c: string, rid: string | undefined, text: string): Envelope => ({ ...env(c, rid), chat_history: text });
      const plain = (c: string, rid: string | undefined) => carrying(c, rid, "Q".repeat(N));

      test("each is charged at least its size in memory and as UTF-8 JSON, and released exactly", async () => {
        const n = await registered();
        for (const [name, text] of Object.entries(TEXTS)) {
          const e = carrying(key("c"), "r1", text);
          expect(await store.enqueue(n, e, PROOF, DEADLINE_MS, DEPTH, "198.51.100.7")).toBe("queued");
          const held = (await store.stats()).storedBytes;
          expect({ name, held: held >= trueCost(e) }).toEqual({ name, held: true });
          expect(held).toBe(envelopeBytes(e));
          const r = await store.claim(n, undefined, 0);
          expect(r.kind === "work" && r.envelope.chat_history === text).toBe(true);
          expect(await store.respond(e)).toEqual({ kind: "accepted" });
          expect(await store.retrieve(e.client_public_key, "r1")).toMatchObject({ kind: "answer", envelope: { chat_history: text } });
          expect(await store.stats()).toMatchObject({ storedBytes: 0, clientsHoldingBytes: 0 });
        }
      });

      test("the budget refuses them where counting characters would have let them in: requests, answers, per address", async () => {
        const c = key("c");
        const euro = carrying(c, "r1", TEXTS.euro!);
        const answer = carrying(c, undefined, TEXTS.euro!);
        const budget = trueCost(answer) - 1;
        expect(lengthOf(euro)).toBeLessThan(budget);
        const s = await backend.make(clock, events, { maxStoredBytes: budget });
        const n = key("node");
        expect((await s.register(n, CAPS, CRED)).kind).toBe("registered");
        expect(await s.enqueue(n, euro, PROOF, DEADLINE_MS, DEPTH)).toBe("storage_full");
        expect(await s.respond(answer)).toEqual({ kind: "storage_full" });
        expect(await s.stats()).toMatchObject({ storedBytes: 0 });
        expect(await s.enqueue(n, plain(c, "r1"), PROOF, DEADLINE_MS, DEPTH)).toBe("queued");

        const shared = await backend.make(clock, events, { maxStoredBytesPerClient: trueCost(euro) - 1 });
        const m = key("node");
        expect((await shared.register(m, CAPS, CRED)).kind).toBe("registered");
        expect(await shared.enqueue(m, euro, PROOF, DEADLINE_MS, DEPTH, "198.51.100.8")).toBe("client_storage_full");
        expect(await shared.enqueue(m, plain(c, "r2"), PROOF, DEADLINE_MS, DEPTH, "198.51.100.8")).toBe("queued");
      });

      test("progress: an update is charged at its true cost too", async () => {
        const c = key("c");
        const request = plain(c, "r1");
        const update = (ciphertext: string) => ({ client_public_key: c, request_id: "r1", protocol: "tokenplace_api_v1_relay_e2ee", version: 1, ciphertext, cipherkey: "aw==", iv: "aQ==" });
        const euro = update("€".repeat(1_000));
        const s = await backend.make(clock, events, { maxStoredBytes: lengthOf(request) + trueCost(euro) - 1 });
        const n = key("node");
        expect((await s.register(n, CAPS, CRED)).kind).toBe("registered");
        expect(await s.enqueue(n, request, PROOF, DEADLINE_MS, DEPTH)).toBe("queued");
        expect((await s.claim(n, undefined, 0)).kind).toBe("work");
        expect(await s.progress(n, CRED, euro)).toBe("storage_full");
        expect(await s.progress(n, CRED, update("Q".repeat(1_000)))).toBe("accepted");
      });
    });
  });
}
