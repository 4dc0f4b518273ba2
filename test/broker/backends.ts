import type Redis from "ioredis";
import { RedisBrokerStore, type BrokerStoreLimits } from "../../src/broker/redis/index.ts";
import { MemoryStore } from "../../src/broker/memory-store.ts";
import type { BrokerStore, ExpiredKind } from "../../src/broker/types.ts";
import { systemClock, type Clock } from "../../src/clock.ts";
import { wakeChannel } from "../../src/common/redis-notifier.ts";
import type { RelayOverrides } from "../../src/relay.ts";
import { connectRedis } from "../../src/state/redis.ts";
import { redisSkipReason } from "../helpers/redis.ts";
import { LEGACY_ON, startLegacyRelay, testConfig, type TestRelay } from "../helpers/relay.ts";
import { redisTestServer } from "../v1/backends.ts";

/** The relay's defaults, as the legacy suites' stores get them when a test sets no limit. */
export const TEST_LIMITS: BrokerStoreLimits = testConfig(LEGACY_ON).broker;

export type OnExpire = (kind: ExpiredKind, count: number) => void;

export interface BrokerBackend {
  name: string;
  /** Why it cannot run here, if so (a missing tool); undefined when it can. */
  unavailable?: () => string | undefined;
  /**
   * A fresh, empty store. No clock: the store's own time (the memory store's system clock, the
   * datastore's TIME). close() also releases whatever the backend opened for it.
   */
  make(clock?: Clock, onExpire?: OnExpire, limits?: Partial<BrokerStoreLimits>): Promise<BrokerStore>;
}

export const COMMAND_TIMEOUT_MS = 2_000;
let storeSeq = 0;

/**
 * A client of the test process's one redis-server (shared with the API v1 suites, started on
 * first use, ended by a watchdog when the process exits); the caller disconnects it.
 */
export async function redisClient(role = "test"): Promise<Redis> {
  const s = await redisTestServer();
  return connectRedis({ url: s.url, keyPrefix: "", commandTimeoutMs: COMMAND_TIMEOUT_MS }, role);
}

/** A unique key prefix per store, so stores sharing the server never see each other's state. */
export const uniquePrefix = () => `test:${process.pid}:legacy-${++storeSeq}:`;

/** The relay's shutdown closes its store; a test's store owns its connection, so it releases it then. */
class TestRedisBrokerStore extends RedisBrokerStore {
  override async close(): Promise<void> {
    await super.close();
    this.client.disconnect();
  }
}

/** Every BrokerStore implementation: the legacy suites run against each. */
export const BROKER_BACKENDS: BrokerBackend[] = [
  {
    name: "memory",
    make: async (clock = systemClock, onExpire, limits = {}) => new MemoryStore({ ...TEST_LIMITS, ...limits }, clock, onExpire),
  },
  {
    name: "redis",
    unavailable: () => redisSkipReason("legacy broker suites on Redis"),
    async make(clock, onExpire, limits = {}) {
      // Publishing its own wake-ups, as the relay's store does: a relay given this store (with its
      // in-process notifier) then runs the marking looks and the publishing scripts.
      const keyPrefix = uniquePrefix();
      return new TestRedisBrokerStore(
        await redisClient("legacy-broker-test"),
        { keyPrefix, limits: { ...TEST_LIMITS, ...limits }, clock, commandTimeoutMs: COMMAND_TIMEOUT_MS, wakeChannel: wakeChannel(keyPrefix) },
        onExpire,
      );
    },
  },
];

/**
 * startLegacyRelay with the backend's store, built with the same limits the relay's config has
 * (from env) and reporting expiry to the relay's metrics, as the relay's own store does.
 */
export async function startBrokerRelay(
  backend: BrokerBackend,
  env: Record<string, string> = {},
  overrides: RelayOverrides = {},
): Promise<TestRelay> {
  const limits = testConfig({ ...LEGACY_ON, ...env }).broker;
  let relay: TestRelay | undefined;
  const store = await backend.make(overrides.clock, (kind, n) => relay!.metrics.expired.labels(kind).inc(n), limits);
  relay = startLegacyRelay(env, { ...overrides, store });
  return relay;
}
