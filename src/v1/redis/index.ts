import type Redis from "ioredis";
import type { Clock } from "../../clock.ts";
import type { Capabilities, Envelope, ProgressUpdate, SelectQuery, TerminalStatus, V1Events, V1Store } from "../store.ts";
import * as housekeeping from "./housekeeping.ts";
import * as nodes from "./nodes.ts";
import * as requests from "./requests.ts";
import * as responses from "./responses.ts";
import { RedisState, type RedisLimits } from "./state.ts";

export type { RedisLimits };

export interface RedisV1StoreOptions {
  /** Prefix of every key, so several relays or environments share one datastore. */
  keyPrefix: string;
  limits: RedisLimits;
  /** Injected time (tests); without it every transition reads the datastore's TIME, so replicas agree. */
  clock?: Clock;
  /** A call that gets no answer within this fails with 503 state_unavailable. */
  commandTimeoutMs: number;
  /**
   * The Pub/Sub channel of wake-ups (src/common/redis-notifier.ts): enqueue and respond publish
   * theirs in their own script. Without it the handlers' notifier publishes.
   */
  wakeChannel?: string;
}

const noEvents: V1Events = { evicted() {}, outcome() {}, dropped() {} };

/**
 * API v1 state in Valkey/Redis, shared by every relay replica. Each transition is one Lua script,
 * so it happens whole or not at all and exactly one terminal transition wins (spec §7.8); the
 * semantics are those of MemoryV1Store. Events are this process's metrics: a script reports what
 * it did and the replica that ran it counts it.
 */
export class RedisV1Store implements V1Store {
  private readonly s: RedisState;
  readonly publishesWakes: boolean;

  constructor(client: Redis, opts: RedisV1StoreOptions, events: V1Events = noEvents) {
    this.s = new RedisState(client, opts.keyPrefix, opts.limits, opts.clock, opts.commandTimeoutMs, events, opts.wakeChannel ?? "");
    this.publishesWakes = opts.wakeChannel !== undefined;
    this.s.define([...nodes.NODE_SCRIPTS, ...requests.REQUEST_SCRIPTS, ...responses.RESPONSE_SCRIPTS, ...housekeeping.HOUSEKEEPING_SCRIPTS]);
  }

  register(key: string, capabilities: Capabilities, credentialDigest: string) {
    return nodes.register(this.s, key, capabilities, credentialDigest);
  }
  claim(key: string, capabilities: Capabilities | undefined, holdMs: number) {
    return nodes.claim(this.s, key, capabilities, holdMs);
  }
  release(key: string, envelope: Envelope) {
    return nodes.release(this.s, key, envelope);
  }
  select(query: SelectQuery) {
    return nodes.select(this.s, query);
  }
  enqueue(key: string, envelope: Envelope, cancelDigest: string | undefined, deadlineMs: number, maxQueueDepth: number, owner?: string) {
    return requests.enqueue(this.s, key, envelope, cancelDigest, deadlineMs, maxQueueDepth, owner);
  }
  control(key: string, requestId: string, digest: string | undefined, acknowledge: boolean) {
    return nodes.control(this.s, key, requestId, digest, acknowledge);
  }
  unregister(key: string, proof: { credentialDigest: string | undefined } | "operator") {
    return nodes.unregister(this.s, key, proof);
  }
  respond(envelope: Envelope) {
    return responses.respond(this.s, envelope);
  }
  progress(key: string, digest: string, update: ProgressUpdate) {
    return responses.progress(this.s, key, digest, update);
  }
  retrieve(clientKey: string, requestId: string | undefined) {
    return responses.retrieve(this.s, clientKey, requestId);
  }
  unretrieve(envelope: Envelope) {
    return responses.unretrieve(this.s, envelope);
  }
  cancel(clientKey: string, requestId: string, digest: string, status: TerminalStatus, reason: string) {
    return requests.cancel(this.s, clientKey, requestId, digest, status, reason);
  }
  sweep() {
    return housekeeping.sweep(this.s);
  }
  diagnostics() {
    return housekeeping.diagnostics(this.s);
  }
  stats() {
    return housekeeping.stats(this.s);
  }
  close() {
    return housekeeping.close(this.s);
  }
}
