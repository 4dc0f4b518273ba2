import type Redis from "ioredis";
import { MemoryStore } from "../broker/memory-store.ts";
import { RedisBrokerStore } from "../broker/redis/index.ts";
import type { BrokerStore, ExpiredKind } from "../broker/types.ts";
import type { Clock } from "../clock.ts";
import { MemoryNotifier, type Notifier } from "../common/notifier.ts";
import { RedisNotifier, wakeChannel, type FailureSignal } from "../common/redis-notifier.ts";
import type { Config } from "../config/index.ts";
import type { ReadinessCheck } from "../ops/health.ts";
import { MemoryV1Store } from "../v1/memory/index.ts";
import { RedisV1Store } from "../v1/redis/index.ts";
import type { V1Events, V1Store } from "../v1/store.ts";
import { connectRedis, whenReady } from "./redis.ts";

/** Both protocols' state, the wake-ups of held requests, and what readiness needs to know of them. */
export interface StateBackend {
  kind: "memory" | "redis";
  store: BrokerStore;
  v1Store: V1Store;
  notifier: Notifier;
  readiness?: ReadinessCheck;
  /** Memory: everything is lost at stop. Redis: the state stays in the datastore for the other replicas. */
  losesStateAtStop: boolean;
  /** Redis: the connection and key prefix rate-limit counters share, so replicas enforce one limit. */
  rateLimitStore?: { client: Redis; keyPrefix: string; commandTimeoutMs: number; authFailures?: FailureSignal };
  close(): Promise<void>;
}

export interface BackendDeps {
  /** Injected time (tests). In production the memory store uses the system clock and Valkey its own TIME. */
  clock?: Clock;
  systemClock: Clock;
  v1Events: V1Events;
  onExpire: (kind: ExpiredKind, count: number) => void;
}

/** The API v1 store's bounds and lifetimes (ms) from the settings. */
export function v1Limits(config: Config) {
  const b = config.broker;
  const v1 = config.v1;
  return {
    leaseMs: v1.leaseSeconds * 1000,
    maxNodes: b.maxNodes,
    maxRequests: v1.maxRequests,
    maxAnswers: b.maxAnswers,
    inFlightTtlMs: v1.inFlightTtlSeconds * 1000,
    tombstoneTtlMs: v1.tombstoneTtlSeconds * 1000,
    terminalTtlMs: v1.terminalTtlSeconds * 1000,
    pendingTtlMs: v1.pendingTtlSeconds * 1000,
    answerTtlMs: b.answerTtlMs,
    maxStoredBytes: v1.maxStoredBytes,
    maxStoredBytesPerClient: v1.maxStoredBytesPerClient,
  };
}

export function createStateBackend(config: Config, deps: BackendDeps): StateBackend {
  const b = config.broker;
  const limits = v1Limits(config);
  if (config.state.backend === "memory") {
    const clock = deps.clock ?? deps.systemClock;
    return {
      kind: "memory",
      store: new MemoryStore(b, clock, deps.onExpire),
      v1Store: new MemoryV1Store(limits, clock, deps.v1Events),
      notifier: new MemoryNotifier(),
      losesStateAtStop: true,
      close: async () => {},
    };
  }

  const settings = config.state.redis!;
  const client = connectRedis(settings, "state");
  // Pub/Sub needs a connection of its own (a subscribed connection runs no other commands).
  const subscriber = connectRedis(settings, "wake");
  const common = { keyPrefix: settings.keyPrefix, clock: deps.clock, commandTimeoutMs: settings.commandTimeoutMs };
  const notifier = new RedisNotifier(client, subscriber, settings.keyPrefix);
  return {
    kind: "redis",
    // Both protocols' wake-ups ride in the transitions' own scripts: no PUBLISH of the relay's own.
    store: new RedisBrokerStore(client, { ...common, limits: b, wakeChannel: wakeChannel(settings.keyPrefix) }, deps.onExpire),
    v1Store: new RedisV1Store(client, { ...common, limits, wakeChannel: wakeChannel(settings.keyPrefix) }, deps.v1Events),
    notifier,
    readiness: datastoreCheck(client, () => notifier.authFailures.listening, settings.commandTimeoutMs),
    losesStateAtStop: false,
    // Failed token checks are announced to every replica, so none reads counters while nobody guesses.
    rateLimitStore: { client, keyPrefix: settings.keyPrefix, commandTimeoutMs: settings.commandTimeoutMs, authFailures: notifier.authFailures },
    async close() {
      notifier.close();
      await client.quit().catch(() => client.disconnect());
    },
  };
}

/**
 * Ready only while the datastore answers a PING in time and the wake channel is live: subscribed,
 * and caught up on what was announced before (src/common/redis-notifier.ts).
 */
function datastoreCheck(client: Redis, subscribed: () => boolean, timeoutMs: number): ReadinessCheck {
  return {
    name: "stateStore",
    async check() {
      try {
        await whenReady(client, Math.min(timeoutMs, 1_000));
        await client.ping();
        const live = subscribed();
        return { ok: live, detail: { stateStore: live ? "ok" : "wake channel down" } };
      } catch {
        return { ok: false, detail: { stateStore: "unreachable" } };
      }
    },
  };
}
