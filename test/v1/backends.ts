import { afterAll, beforeAll } from "bun:test";
import type Redis from "ioredis";
import { ManualClock } from "../../src/clock.ts";
import { connectRedis, whenReady } from "../../src/state/redis.ts";
import { MemoryV1Store, RedisV1Store } from "../../src/v1/index.ts";
import type { EvictionReason, Outcome, V1Events, V1Store } from "../../src/v1/store.ts";
import { redisSkipReason, startRedis, type RedisServer } from "../helpers/redis.ts";

/** Limits small enough to reach in a test; times in ms. */
export const TEST_LIMITS = {
  leaseMs: 30_000,
  maxNodes: 50,
  maxRequests: 100,
  maxAnswers: 100,
  inFlightTtlMs: 30_000,
  tombstoneTtlMs: 60_000,
  terminalTtlMs: 300_000,
  pendingTtlMs: 300_000,
  answerTtlMs: 300_000,
  maxStoredBytes: 64 * 1024 * 1024,
};

/** Overrides of TEST_LIMITS, and the bounds they leave unset (no per-address share by default). */
export type TestLimits = Partial<typeof TEST_LIMITS> & { maxStoredBytesPerClient?: number };

export interface Recorded extends V1Events {
  evictions: EvictionReason[];
  outcomes: Outcome[];
  drops: string[];
}

export function recorder(): Recorded {
  const r: Recorded = {
    evictions: [],
    outcomes: [],
    drops: [],
    evicted: (reason) => void r.evictions.push(reason),
    outcome: (o) => void r.outcomes.push(o),
    dropped: (kind, n) => void r.drops.push(`${kind}:${n}`),
  };
  return r;
}

export interface Backend {
  name: string;
  /** Why it cannot run here, if so (a missing tool); undefined when it can. */
  unavailable?: () => string | undefined;
  make(clock: ManualClock, events: V1Events, limits?: TestLimits): V1Store;
}

/**
 * One redis-server for the whole test process, started by the first suite that needs it and
 * stopped when the process exits. Suites ask `unavailable()` while they load, in their root scope:
 * that is where the redis backend hooks the server start (beforeAll, so make() can stay
 * synchronous) and the closing of the clients make() opened (afterAll, so bun test can exit).
 */
let server: Promise<RedisServer> | undefined;
let running: RedisServer | undefined;
let startFailure: unknown;
const clients = new Set<Redis>();
let prefixSeq = 0;
export const REDIS_COMMAND_TIMEOUT_MS = 5_000;

/** The shared test redis-server (started on first use). */
export function redisTestServer(): Promise<RedisServer> {
  server ??= startRedis({ persist: false }).then(async (s) => {
    const probe = connectRedis({ url: s.url, keyPrefix: "", commandTimeoutMs: REDIS_COMMAND_TIMEOUT_MS }, "test-probe");
    let dir: string;
    try {
      await whenReady(probe, REDIS_COMMAND_TIMEOUT_MS);
      dir = ((await probe.config("GET", "dir")) as string[])[1]!;
    } finally {
      probe.disconnect();
    }
    // bun test emits no "exit" event: a watchdog stops the server once this process is gone
    // (also after a crash), and removes its data directory.
    const watchdog = Bun.spawn(
      ["sh", "-c", 'while kill -0 "$1" 2>/dev/null; do sleep 0.5; done; kill "$2" 2>/dev/null; sleep 0.5; rm -rf "$3"', "redis-watchdog", String(process.pid), String(s.proc.pid), dir],
      { stdin: "ignore", stdout: "ignore", stderr: "ignore" },
    );
    watchdog.unref();
    running = s;
    return s;
  });
  return server;
}

/** A client of the shared server, disconnected when the current suite file ends. */
export function redisTestClient(role = "test"): Redis {
  if (!running) throw new Error(`redis-server is not running (${startFailure ?? "the suite did not ask unavailable() while loading"})`);
  const client = connectRedis({ url: running.url, keyPrefix: "", commandTimeoutMs: REDIS_COMMAND_TIMEOUT_MS }, role);
  clients.add(client);
  return client;
}

/** A key prefix no other store of this process uses: tests share the server, never their keys. */
export const uniqueRedisPrefix = () => `test:${process.pid}:${++prefixSeq}:`;

function redisUnavailable(): string | undefined {
  const why = redisSkipReason("API v1 redis store");
  if (why !== undefined) return why;
  beforeAll(async () => {
    // A failure fails the redis tests (make() reports it), not the memory ones of the same file.
    await redisTestServer().catch((err: unknown) => void (startFailure = err));
  });
  afterAll(() => {
    for (const c of clients) c.disconnect();
    clients.clear();
  });
  return undefined;
}

/** Every V1Store implementation: the contract suite and the protocol suite run against each. */
export const BACKENDS: Backend[] = [
  {
    name: "memory",
    make: (clock, events, limits = {}) => new MemoryV1Store({ ...TEST_LIMITS, ...limits }, clock, events),
  },
  {
    name: "redis",
    unavailable: redisUnavailable,
    make: (clock, events, limits = {}) =>
      new RedisV1Store(
        redisTestClient(),
        { keyPrefix: uniqueRedisPrefix(), limits: { ...TEST_LIMITS, ...limits }, clock, commandTimeoutMs: REDIS_COMMAND_TIMEOUT_MS },
        events,
      ),
  },
];
