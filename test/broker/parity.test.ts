// The Redis store has the memory store's semantics: the same random sequences of operations,
// under one injected clock that jumps across every TTL boundary, give the same answers, the same
// stats (stored bytes included) and the same expiry counts. Payloads have random sizes against a
// small byte budget, so storage_full and node_storage_full are part of the sequences.
import { afterAll, describe, expect, test } from "bun:test";
import type { BrokerStoreLimits } from "../../src/broker/redis/index.ts";
import type { BrokerStore, ExpiredKind, Job } from "../../src/broker/types.ts";
import { ManualClock } from "../../src/clock.ts";
import { BROKER_BACKENDS } from "./backends.ts";
import { prng } from "../helpers/prng.ts";

const LIMITS: Partial<BrokerStoreLimits> = {
  maxNodes: 4,
  maxQueueDepth: 3,
  maxAnswers: 3,
  maxStreamSessions: 2,
  maxStreamChunks: 3,
  nodeStaleMs: 30_000,
  jobTtlMs: 45_000,
  answerTtlMs: 20_000,
  streamTtlMs: 25_000,
  // A node's share is 60 (a quarter): a couple of small jobs, or one mid-sized; answers and chunks
  // of the larger paddings reach the total.
  maxStoredBytes: 240,
};
/** Padding lengths: empty, small, mid, and past a node's share (such a job never fits; an answer may). */
const PAD = [0, 0, 5, 20, 45, 70, 120];
// Each TTL, one below and one above it, and small steps.
const STEPS = [0, 0, 0, 1, 999, 5_000, 19_999, 20_000, 20_001, 24_999, 25_001, 29_999, 30_000, 30_001, 44_999, 45_000];


const memory = BROKER_BACKENDS.find((b) => b.name === "memory")!;
const others = BROKER_BACKENDS.filter((b) => b.name !== "memory");

for (const backend of others) {
  const why = backend.unavailable?.();
  describe.skipIf(why !== undefined)(`parity with the memory store: ${backend.name}`, () => {
    const opened: BrokerStore[] = [];
    afterAll(async () => {
      for (const s of opened) await s.close();
    });
    /** How often each result of a byte bound came up, over all seeds. */
    const reached = { seeds: 0, storage_full: 0, node_storage_full: 0, stored_after_full: 0 };

    // PARITY_SEEDS=300 runs seeds 1..300 (a longer hunt for differences).
    const seeds = process.env.PARITY_SEEDS ? Array.from({ length: Number(process.env.PARITY_SEEDS) }, (_, i) => i + 1) : [1, 2, 3, 4, 5, 6, 7, 8];
    for (const seed of seeds) {
      test(`random operations, seed ${seed}`, async () => {
        const clock = new ManualClock();
        const counts = () => ({ node: 0, job: 0, answer: 0, stream: 0 }) as Record<ExpiredKind, number>;
        const [mc, rc] = [counts(), counts()];
        const m = await memory.make(clock, (k, n) => (mc[k] += n), LIMITS);
        const r = await backend.make(clock, (k, n) => (rc[k] += n), LIMITS);
        opened.push(r);
        const rnd = prng(seed);
        const nodes = ["n0", "n1", "n2", "n3", "n4", "n5"];
        const clients = ["c0", "c1", "c2", "c3"];
        const sessions: string[] = ["never-opened"];
        const lastTouch = new Map<string, number>();
        let seq = 0;
        const log: string[] = [];

        const same = async <T>(what: string, op: (s: BrokerStore) => Promise<T>): Promise<T> => {
          const a = await op(m);
          const b = await op(r);
          log.push(`${what} -> ${JSON.stringify(a)}`);
          const text = JSON.stringify(a) ?? "";
          if (text.includes('"storage_full"')) reached.storage_full++;
          if (text.includes('"node_storage_full"')) reached.node_storage_full++;
          expect({ step: log.length, what, result: b }).toEqual({ step: log.length, what, result: a });
          return a;
        };
        const checkpoint = async () => {
          await m.sweep();
          await r.sweep();
          expect({ step: log.length, stats: await r.stats(), expired: rc }).toEqual({ step: log.length, stats: await m.stats(), expired: mc });
        };

        for (let i = 0; i < 400; i++) {
          const node = rnd.pick(nodes);
          const client = rnd.pick(clients);
          switch (rnd.int(14)) {
            case 0:
              clock.advance(rnd.pick(STEPS));
              break;
            case 1: {
              const result = await same(`touch ${node}`, (s) => s.touchNode(node));
              if (result === "ok") lastTouch.set(node, clock.now());
              break;
            }
            case 2: {
              // Random on both sides: each picks one of the nodes touched within the stale timeout.
              const live = nodes.filter((n) => clock.now() - (lastTouch.get(n) ?? -Infinity) <= LIMITS.nodeStaleMs!);
              for (const s of [m, r]) {
                const picked = await s.pickNode();
                if (live.length === 0) expect(picked).toBeUndefined();
                else expect(live).toContain(picked!);
              }
              break;
            }
            case 3:
            case 4: {
              const job: Job = { chat_history: `h${++seq}${"x".repeat(rnd.pick(PAD))}`, cipherkey: "k", iv: "v" };
              if (rnd.next() < 0.6) job.client_public_key = client;
              if (job.client_public_key && rnd.next() < 0.4) job.stream = true;
              await same(`enqueue ${node} ${job.chat_history.length}`, (s) => s.enqueueJob(node, job));
              break;
            }
            case 5: {
              const max = 1 + rnd.int(3);
              await same(`take ${node} ${max}`, (s) => s.takeJobs(node, max));
              break;
            }
            case 6: {
              const answer = { chat_history: `a${++seq}${"y".repeat(rnd.pick(PAD))}`, cipherkey: "k", iv: rnd.pick(["v", "iv-iv-iv"]) };
              const result = await same(`put ${client} ${answer.chat_history.length}`, (s) => s.putAnswer(client, answer));
              // A refusal by bytes, then room again (something was collected, replaced or expired).
              if (result === "stored" && log.some((l) => l.endsWith('"storage_full"'))) reached.stored_after_full++;
              break;
            }
            case 7:
              await same(`take answer ${client}`, (s) => s.takeAnswer(client));
              break;
            case 8: {
              const fits = await same("can open", (s) => s.canOpenStream());
              if (fits || rnd.next() < 0.2) {
                const sid = `s${++seq}`;
                sessions.push(sid);
                await same(`open ${client} ${sid}`, (s) => s.openStream(client, sid));
              }
              break;
            }
            case 9:
            case 10: {
              const sid = rnd.pick(sessions);
              const chunk = rnd.pick(["text", 7, null, { a: [1, "b"] }, [true], "z".repeat(rnd.pick(PAD)), { t: "w".repeat(rnd.pick(PAD)) }]);
              const final = rnd.next() < 0.2;
              await same(`push ${sid} ${final}`, (s) => s.pushChunk(sid, chunk, final));
              break;
            }
            case 11:
              await same(`drain ${client}`, (s) => s.drainStream(client));
              break;
            case 12: {
              // Between sweeps: nodes, queues and the bytes held (both stores sweep on the same refusals,
              // so the byte counts agree at every step); answer and session counts at checkpoints.
              const { nodes: n, queuedJobs, maxQueueDepth, storedBytes } = await m.stats();
              const got = await r.stats();
              expect({ step: log.length, nodes: got.nodes, queuedJobs: got.queuedJobs, maxQueueDepth: got.maxQueueDepth, storedBytes: got.storedBytes }).toEqual({
                step: log.length, nodes: n, queuedJobs, maxQueueDepth, storedBytes,
              });
              break;
            }
            case 13:
              await checkpoint();
              break;
          }
          if (i % 50 === 49) await checkpoint();
        }
        await checkpoint();
        clock.advance(60_000);
        await checkpoint();
        expect(await r.stats()).toEqual({ nodes: 0, queuedJobs: 0, maxQueueDepth: 0, answers: 0, streams: 0, storedBytes: 0 });
        expect((await m.stats()).storedBytes).toBe(0);
        reached.seeds++;
      });
    }

    test("the sequences reached the byte bounds (and recovered from them)", () => {
      if (reached.seeds === 0) return; // the seeds were filtered out (bun test -t)
      expect(reached.storage_full).toBeGreaterThan(0);
      expect(reached.node_storage_full).toBeGreaterThan(0);
      expect(reached.stored_after_full).toBeGreaterThan(0);
    });
  });
}
