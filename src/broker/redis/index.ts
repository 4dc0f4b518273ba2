import type Redis from "ioredis";
import type { Clock } from "../../clock.ts";
import type {
  Answer, BrokerStore, EnqueueResult, ExpiredKind, Job, PushResult, StoreResult, StoreStats, StreamDrain, TouchResult,
} from "../types.ts";
import { createAnswerOps } from "./answers.ts";
import { createHousekeeping } from "./housekeeping.ts";
import { createNodeOps } from "./nodes.ts";
import { createContext, type BrokerStoreLimits } from "./shared.ts";
import { createStreamOps } from "./streams.ts";

export type { BrokerStoreLimits } from "./shared.ts";

export interface RedisBrokerStoreOptions {
  /** Prefix of every key; the legacy protocol's keys are `${keyPrefix}{legacy}:...`. */
  keyPrefix: string;
  limits: BrokerStoreLimits;
  /** Tests inject a ManualClock; without one the datastore's TIME decides (replicas agree). */
  clock?: Clock;
  /** How long a call waits for a (re)connecting datastore before answering state_unavailable. */
  commandTimeoutMs: number;
  /** Most records of each kind one sweep prunes (default 256). */
  sweepBatch?: number;
  /**
   * The Pub/Sub channel of wake-ups (src/common/redis-notifier.ts): the transitions that make work
   * available publish theirs in their own script, only while a poll may wait (./shared.ts,
   * "Wake-ups"). Without it the handlers' notifier publishes.
   */
  wakeChannel?: string;
}

/**
 * The legacy broker's state on Valkey/Redis, with the memory store's semantics. Every method is
 * one Lua script (one atomic transition), so several replicas can share the state; see
 * ./shared.ts for the key layout and how time, TTLs and bounds are enforced in the datastore.
 *
 * The client is the caller's: close() leaves the connection (and the shared state) alone.
 */
export class RedisBrokerStore implements BrokerStore {
  private readonly nodes;
  private readonly answers;
  private readonly streams;
  private readonly housekeeping;
  readonly publishesWakes: boolean;

  constructor(
    readonly client: Redis,
    opts: RedisBrokerStoreOptions,
    onExpire: (kind: ExpiredKind, count: number) => void = () => {},
  ) {
    const ctx = createContext(client, opts, onExpire);
    this.publishesWakes = opts.wakeChannel !== undefined;
    this.nodes = createNodeOps(ctx);
    this.answers = createAnswerOps(ctx);
    this.streams = createStreamOps(ctx);
    this.housekeeping = createHousekeeping(ctx);
  }

  /** Like the memory store: at capacity (a count or the byte budget), sweep once and ask again. */
  private async roomAfterSweep<T>(attempt: () => Promise<T>, full: (result: T) => boolean): Promise<T> {
    const first = await attempt();
    if (!full(first)) return first;
    await this.sweep();
    return attempt();
  }

  touchNode(key: string): Promise<TouchResult> {
    return this.roomAfterSweep(() => this.nodes.touchNode(key), (r) => r === "full");
  }
  pickNode(): Promise<string | undefined> {
    return this.nodes.pickNode();
  }
  enqueueJob(nodeKey: string, job: Job): Promise<EnqueueResult> {
    return this.roomAfterSweep(() => this.nodes.enqueueJob(nodeKey, job), (r) => r === "storage_full");
  }
  takeJobs(nodeKey: string, max: number, holdMs?: number): Promise<Job[]> {
    return this.nodes.takeJobs(nodeKey, max, holdMs);
  }
  putAnswer(clientKey: string, answer: Answer): Promise<StoreResult> {
    return this.roomAfterSweep(() => this.answers.putAnswer(clientKey, answer), (r) => r !== "stored");
  }
  takeAnswer(clientKey: string, holdMs?: number): Promise<Answer | undefined> {
    return this.answers.takeAnswer(clientKey, holdMs);
  }
  canOpenStream(): Promise<boolean> {
    return this.roomAfterSweep(() => this.streams.canOpenStream(), (fits) => !fits);
  }
  openStream(clientKey: string, sessionId: string): Promise<void> {
    return this.streams.openStream(clientKey, sessionId);
  }
  pushChunk(sessionId: string, chunk: unknown, final: boolean): Promise<PushResult> {
    return this.roomAfterSweep(() => this.streams.pushChunk(sessionId, chunk, final), (r) => r.kind === "storage_full");
  }
  drainStream(clientKey: string, holdMs?: number): Promise<StreamDrain | undefined> {
    return this.streams.drainStream(clientKey, holdMs);
  }
  sweep(): Promise<void> {
    return this.housekeeping.sweep();
  }
  stats(): Promise<StoreStats> {
    return this.housekeeping.stats();
  }
  /** Shared state outlives a replica: nothing to discard, and the connection belongs to the caller. */
  async close(): Promise<void> {}
}
