// The memory guard's levels and what each refuses, with RSS readings fed by the test: unit level
// (thresholds, hysteresis, when a collection is forced) and over HTTP on an in-process relay
// (503 busy with reason "memory" before the body is read; small bodies, polls and node answers go
// on; /healthz and /metrics tell). test/limits/rss.test.ts checks the real RSS of the binary.
import { afterEach, describe, expect, test } from "bun:test";
import { Registry } from "prom-client";
import { memoryShares } from "../../src/config/memory.ts";
import { SHRINK_LOW_REQUESTS, SHRINK_MIN_INTERVAL_MS, SHRINK_PEAK_REQUESTS, SHRINK_QUIET_MS, createMemoryGuard } from "../../src/ops/memory-guard.ts";
import { captureLogger, fakeKey, startTestRelay, type TestRelay } from "../helpers/relay.ts";
import { NODE_CAPS, PROTOCOL, rid } from "../v1/helpers.ts";

const MiB = 1024 * 1024;
const BUDGET = 512 * MiB;
/** Node routes count as node routes only with a registration token configured (and sent). */
const NODE_TOKEN = "memory-guard-node-token-0123456789";
const NODE_AUTH = { "X-Relay-Server-Token": NODE_TOKEN };
// 512 MiB: collect at 400 MiB, client bodies refused from 456 MiB, every large body from 484 MiB.
const { shares, guard: levels } = memoryShares(BUDGET);

function unitGuard(enabled = true) {
  let rss = 100 * MiB;
  let collections = 0;
  const registry = new Registry();
  const guard = createMemoryGuard({
    budget: { bytes: BUDGET, shares, guard: { ...levels, enabled } },
    registry,
    logger: captureLogger("warn").logger,
    readRss: () => rss,
    collect: () => collections++,
    intervalMs: 60_000,
  });
  return { guard, registry, set: (v: number) => ((rss = v), guard.sample()), collections: () => collections };
}

/** A guard at a fixed RSS whose open requests and clock the test sets through `at(ms, open)`. */
function loadGuard(rss: number) {
  let open = 0;
  let now = 0;
  const counts = { collections: 0, shrinks: 0 };
  const registry = new Registry();
  const guard = createMemoryGuard({
    budget: { bytes: BUDGET, shares, guard: levels },
    registry,
    logger: captureLogger("warn").logger,
    readRss: () => rss,
    collect: () => counts.collections++,
    shrink: () => counts.shrinks++,
    pending: () => open,
    now: () => now,
    intervalMs: 60_000,
  });
  const at = (ms: number, requests: number) => ((now = ms), (open = requests), guard.sample());
  return { guard, registry, counts, at };
}

const body = (size: number | null, chunked = false) =>
  new Request("http://relay.test/x", {
    method: "POST",
    headers: size === null ? {} : { "Content-Length": String(size) },
    body: chunked ? new ReadableStream({ start: (c) => c.close() }) : "x",
  });

describe("memory guard levels", () => {
  test("thresholds in the headroom, up at once, down only below the collect level", () => {
    expect(levels).toMatchObject({ collectBytes: 400 * MiB, shedClientsBytes: 456 * MiB, shedAllBytes: 484 * MiB });
    const { guard, set } = unitGuard();
    expect(guard.level).toBe(0);
    set(430 * MiB);
    expect(guard.level).toBe(0);
    set(460 * MiB);
    expect([guard.level, guard.shedding]).toEqual([1, true]);
    set(490 * MiB);
    expect(guard.level).toBe(2);
    set(470 * MiB);
    expect(guard.level).toBe(1);
    // Between collect and shed-clients: still refusing (hysteresis), until below the collect level.
    set(410 * MiB);
    expect(guard.level).toBe(1);
    set(399 * MiB);
    expect([guard.level, guard.shedding]).toEqual([0, false]);
  });

  test("past the collect level a full collection is forced once RSS grew by 1/8 of the headroom since the last, at most every 50 ms", async () => {
    // Headroom 112 MiB: 14 MiB of growth.
    const { set, collections } = unitGuard();
    set(300 * MiB);
    expect(collections()).toBe(0);
    set(401 * MiB); // reading after the collection: still 401 MiB (live, not garbage)
    expect(collections()).toBe(1);
    await Bun.sleep(60);
    set(410 * MiB);
    expect(collections()).toBe(1);
    set(416 * MiB);
    expect(collections()).toBe(2);
    // Grown again, but within 50 ms of the last one.
    set(440 * MiB);
    expect(collections()).toBe(2);
    await Bun.sleep(60);
    set(440 * MiB);
    expect(collections()).toBe(3);
  });

  test("what is refused: large and chunked bodies on client routes at level 1, node routes too at level 2; small bodies never", () => {
    const { guard, set, registry } = unitGuard();
    set(460 * MiB);
    const refused = (req: Request, node: boolean) => {
      try {
        guard.checkBody(req, node);
        return undefined;
      } catch (err) {
        return (err as { code: string }).code;
      }
    };
    expect(refused(body(64 * 1024), false)).toBe("busy_memory");
    expect(refused(body(null, true), false)).toBe("busy_memory");
    expect(refused(body(64 * 1024 - 1), false)).toBeUndefined();
    expect(refused(body(4 * MiB), true)).toBeUndefined();
    set(490 * MiB);
    expect(refused(body(4 * MiB), true)).toBe("busy_memory");
    expect(refused(body(1_000), true)).toBeUndefined();
    return registry.metrics().then((text) => {
      expect(text).toContain('tokenplace_relay_memory_guard_refusals_total{side="client"} 2');
      expect(text).toContain('tokenplace_relay_memory_guard_refusals_total{side="node"} 1');
      expect(text).toContain("tokenplace_relay_memory_guard_level 2");
    });
  });

  test("an RSS read that throws (no file descriptor left for /proc) keeps the last reading instead of ending the process", () => {
    let rss: number | Error = 470 * MiB;
    const guard = createMemoryGuard({
      budget: { bytes: BUDGET, shares, guard: { ...levels, enabled: true } },
      registry: new Registry(),
      logger: captureLogger("warn").logger,
      readRss: () => {
        if (rss instanceof Error) throw rss;
        return rss;
      },
      collect: () => {},
      intervalMs: 60_000,
    });
    try {
      expect(guard.level).toBe(1);
      rss = Object.assign(new Error("Failed to get memory usage"), { code: "EMFILE" });
      expect(() => guard.sample()).not.toThrow();
      expect(guard.level).toBe(1);
      rss = 100 * MiB;
      guard.sample();
      expect(guard.level).toBe(0);
    } finally {
      guard.close();
    }
  });

  test("RELAY_MEMORY_GUARD=false: never refuses, never collects", () => {
    const { guard, set, collections } = unitGuard(false);
    set(500 * MiB);
    expect(guard.shedding).toBe(false);
    expect(collections()).toBe(0);
  });

  test("after load passed far below the budget: a collection, no shrink (it would drop the compiled code the next burst needs)", () => {
    const { guard, counts, at } = loadGuard(60 * MiB);
    try {
      at(1_000, SHRINK_PEAK_REQUESTS);
      at(1_100, 0);
      at(1_100 + SHRINK_QUIET_MS, 0);
      expect([counts.collections, counts.shrinks]).toEqual([1, 0]);
    } finally {
      guard.close();
    }
  });

  test("after load passed with RSS still in play (past half the collect level) a collection and a shrink, at most once per SHRINK_MIN_INTERVAL_MS", async () => {
    const { guard, registry, counts, at } = loadGuard(levels.collectBytes / 2 + MiB);
    try {
      // No peak yet: a quiet relay is never shrunk.
      at(10_000, 0);
      expect(counts.shrinks).toBe(0);
      at(10_100, SHRINK_PEAK_REQUESTS);
      at(10_200, SHRINK_LOW_REQUESTS);
      at(10_200 + SHRINK_QUIET_MS - 1, SHRINK_LOW_REQUESTS);
      expect(counts.shrinks).toBe(0);
      // A lull that rises again above the low mark starts the quiet period over.
      at(12_000, SHRINK_LOW_REQUESTS + 1);
      at(12_100, 0);
      at(12_100 + SHRINK_QUIET_MS - 1, 0);
      expect(counts.shrinks).toBe(0);
      at(12_100 + SHRINK_QUIET_MS, 0);
      expect([counts.collections, counts.shrinks]).toEqual([1, 1]);
      const first = 12_100 + SHRINK_QUIET_MS;
      // Passed once, shrunk once: no further shrink without a new peak.
      at(first + SHRINK_QUIET_MS * 2, 0);
      expect(counts.shrinks).toBe(1);
      // A new peak soon after waits for the interval to end.
      at(first + SHRINK_QUIET_MS * 2 + 100, SHRINK_PEAK_REQUESTS * 2);
      at(first + SHRINK_QUIET_MS * 2 + 200, 3);
      at(first + SHRINK_MIN_INTERVAL_MS - 1, 3);
      expect(counts.shrinks).toBe(1);
      at(first + SHRINK_MIN_INTERVAL_MS, 3);
      expect([counts.collections, counts.shrinks]).toEqual([2, 2]);
      expect(await registry.metrics()).toContain("tokenplace_relay_memory_shrinks_total 2");
    } finally {
      guard.close();
    }
  });
});

describe("memory guard sampling period", () => {
  // Periods far apart (5 ms busy, 10 s idle), so the counts below cannot be a matter of timing.
  function sampledGuard(pending = () => 0) {
    let rss = 100 * MiB;
    let reads = 0;
    const guard = createMemoryGuard({
      budget: { bytes: BUDGET, shares, guard: levels },
      registry: new Registry(),
      logger: captureLogger("warn").logger,
      readRss: () => (reads++, rss),
      collect: () => {},
      shrink: () => {},
      pending,
      intervalMs: 5,
      idleIntervalMs: 10_000,
    });
    return { guard, reads: () => reads, setRss: (v: number) => (rss = v) };
  }

  test("far below the collect level and with few open requests it samples at the idle period; past half the collect level at the short one", async () => {
    const g = sampledGuard();
    try {
      const first = g.reads();
      await Bun.sleep(150);
      // Only the sample at start: the next is 10 s away.
      expect(g.reads() - first).toBe(0);
      g.setRss(levels.collectBytes / 2 + MiB);
      g.guard.sample(); // as a large body's read does; from now on RSS is in play
      const busyFrom = g.reads();
      await Bun.sleep(150);
      expect(g.reads() - busyFrom).toBeGreaterThanOrEqual(5);
    } finally {
      g.guard.close();
    }
  });

  test("a body past the small size marks memory in play (short period) without a sample of its own; a large body is sampled at once", async () => {
    const g = sampledGuard();
    try {
      await Bun.sleep(20);
      const idle = g.reads();
      g.guard.bodyRead(256 * 1024);
      expect(g.reads()).toBe(idle); // not sampled for itself
      await Bun.sleep(150);
      expect(g.reads() - idle).toBeGreaterThanOrEqual(5);
      const before = g.reads();
      g.guard.bodyRead(4 * MiB);
      expect(g.reads()).toBe(before + 1);
    } finally {
      g.guard.close();
    }
  });

  test("many open requests count as busy even while RSS is low, and close() stops sampling", async () => {
    let open = SHRINK_LOW_REQUESTS + 1;
    const g = sampledGuard(() => open);
    const from = g.reads();
    await Bun.sleep(150);
    expect(g.reads() - from).toBeGreaterThanOrEqual(5);
    open = 0;
    g.guard.close();
    const closedAt = g.reads();
    await Bun.sleep(50);
    expect(g.reads()).toBe(closedAt);
  });
});

describe("memory guard over HTTP", () => {
  let relay: TestRelay | undefined;
  afterEach(async () => {
    await relay?.shutdown();
    relay = undefined;
  });

  test("shedding: 503 busy (memory) with Retry-After before the body is read; polls, small requests and node answers go on; /healthz and /metrics tell", async () => {
    let rss = 100 * MiB;
    relay = startTestRelay(
      { RELAY_MEMORY_GUARD: "true", RELAY_MEMORY_BUDGET_BYTES: String(BUDGET), RELAY_RATE_LIMITS: "off", TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS: "0", TOKEN_PLACE_RELAY_SERVER_TOKEN: NODE_TOKEN },
      { readRss: () => rss },
    );
    const node = fakeKey("node");
    expect((await relay.post("/api/v1/relay/servers/register", { server_public_key: node, capabilities: NODE_CAPS }, NODE_AUTH)).status).toBe(200);
    const request = (chatHistory: string, clientKey = fakeKey("client"), id = rid()) =>
      relay!.post("/api/v1/relay/requests", { server_public_key: node, client_public_key: clientKey, request_id: id, protocol: PROTOCOL, version: 1, chat_history: chatHistory, cipherkey: "a2V5", iv: "aXY=" });
    const big = "Y2lwaGVy".repeat(16 * 1024); // 128 KiB

    rss = 460 * MiB;
    relay.memoryGuard.sample();
    const refused = await request(big);
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toBe("1");
    expect(refused.headers.get("connection")).toBe("close");
    expect(await refused.json()).toEqual({
      error: { message: "The relay is near its memory budget; retry shortly", code: 503, type: "busy", reason: "memory" },
    });
    // A small request is stored and reaches the node's poll; the node answers with a large body.
    const clientKey = fakeKey("client");
    const id = rid();
    expect((await request("Y2lwaGVydGV4dA==", clientKey, id)).status).toBe(200);
    const polled = await relay.post("/api/v1/relay/servers/poll", { server_public_key: node }, NODE_AUTH);
    expect(polled.status).toBe(200);
    expect(((await polled.json()) as { request_id?: string }).request_id).toBe(id);
    const answer = await relay.post("/api/v1/relay/responses", { client_public_key: clientKey, request_id: id, protocol: PROTOCOL, version: 1, chat_history: big, cipherkey: "a2V5", iv: "aXY=" }, NODE_AUTH);
    expect(answer.status).toBe(200);
    const health = await relay.get("/healthz");
    expect(health.status).toBe(200);
    expect(((await health.json()) as { memoryGuard: string }).memoryGuard).toBe("shedding_clients");

    // Past the last level node answers wait too.
    rss = 490 * MiB;
    relay.memoryGuard.sample();
    const id2 = rid();
    const key2 = fakeKey("client");
    expect((await request("Y2lwaGVydGV4dA==", key2, id2)).status).toBe(200);
    await relay.post("/api/v1/relay/servers/poll", { server_public_key: node }, NODE_AUTH);
    const nodeRefused = await relay.post("/api/v1/relay/responses", { client_public_key: key2, request_id: id2, protocol: PROTOCOL, version: 1, chat_history: big, cipherkey: "a2V5", iv: "aXY=" }, NODE_AUTH);
    expect(nodeRefused.status).toBe(503);
    expect(((await nodeRefused.json()) as { error: { reason: string } }).error.reason).toBe("memory");

    // Memory back below the collect level: admitted again.
    rss = 200 * MiB;
    relay.memoryGuard.sample();
    expect((await request(big)).status).toBe(200);
    const metrics = await (await relay.get("/metrics")).text();
    expect(metrics).toContain('tokenplace_relay_rejections_total{reason="busy_memory"} 2');
    expect(metrics).toContain('tokenplace_relay_memory_guard_refusals_total{side="client"} 1');
    expect(metrics).toContain('tokenplace_relay_memory_guard_refusals_total{side="node"} 1');
    expect(metrics).toContain('tokenplace_relay_memory_budget_bytes{share="total"} 536870912');
  });

  test("with open registration (no server token) a node route's large body is a client's: refused at level 1, before it is read", async () => {
    let rss = 100 * MiB;
    relay = startTestRelay({ RELAY_MEMORY_GUARD: "true", RELAY_MEMORY_BUDGET_BYTES: String(BUDGET), RELAY_RATE_LIMITS: "off" }, { readRss: () => rss });
    rss = 460 * MiB;
    relay.memoryGuard.sample();
    const big = "Y2lwaGVy".repeat(16 * 1024); // 128 KiB
    const res = await relay.post("/api/v1/relay/responses", { client_public_key: fakeKey("anyone"), request_id: rid(), protocol: PROTOCOL, version: 1, chat_history: big, cipherkey: "a2V5", iv: "aXY=" });
    expect(res.status).toBe(503);
    expect(((await res.json()) as { error: { reason: string } }).error.reason).toBe("memory");
    expect(await (await relay.get("/metrics")).text()).toContain('tokenplace_relay_memory_guard_refusals_total{side="client"} 1');
  });
});
