import { timingSafeEqual } from "node:crypto";
import type { Clock } from "../../clock.ts";
import type { Capabilities, Envelope, EvictionReason, ProgressUpdate, TerminalStatus, V1Events } from "../store.ts";

/** The bounds and lifetimes the memory store enforces (milliseconds). */
export interface MemoryLimits {
  maxNodes: number;
  maxRequests: number;
  maxAnswers: number;
  inFlightTtlMs: number;
  tombstoneTtlMs: number;
  terminalTtlMs: number;
  pendingTtlMs: number;
  answerTtlMs: number;
}

/** Upstream's fixed "recently unregistered" window (spec §4). */
export const RECENTLY_UNREGISTERED_MS = 300_000;

export interface QueueItem {
  envelope: Envelope;
  /** Pair id of a tracked request; absent for requests without request_id. */
  pair?: string;
  enqueuedAt: number;
  /** The request's deadline, or the pending TTL for untracked requests. */
  expiresAt: number;
}

export interface InFlight {
  pair: string;
  clientKey: string;
  envelope: Envelope;
  deadlineAt: number;
  startedAt: number;
  /** Accounting lease: counts toward load and blocks eviction while in the future (spec §7.3). */
  leaseUntil: number;
}

export interface NodeRec {
  key: string;
  /** Registration order, for round robin among tied candidates (spec §7.6). */
  seq: number;
  capabilities: Capabilities;
  credentialDigest: string;
  lastSeen: number;
  leaseMs: number;
  /** A node held in a long poll is never stale. */
  heldUntil: number;
  queue: QueueItem[];
  /** In flight at this node, by request_id (control and progress name only the id). */
  inFlight: Map<string, InFlight>;
  /** request_ids queued or in flight here, so control can never confuse two clients' requests. */
  requestIds: Set<string>;
}

export interface Pending {
  nodeKey: string;
  clientKey: string;
  requestId: string;
  admittedAt: number;
  deadlineAt: number;
  cancelDigest?: string;
  state: "queued" | "in_flight";
}

interface Expiring {
  expiresAt: number;
}
export interface Terminal extends Expiring {
  status: TerminalStatus;
  reason: string;
}
export interface Tombstone extends Expiring {
  status: TerminalStatus;
  reason: string;
  deadlineAt: number;
  ownerDigest: string;
}
export interface StoredAnswer extends Expiring {
  envelope: Envelope;
  pair?: string;
}

/** Unambiguous id of a (client key, request_id) pair: requests are identified by both (spec §2). */
export const pairId = (clientKey: string, requestId: string) => `${clientKey.length}:${clientKey}${requestId}`;
export const tombstoneId = (nodeKey: string, requestId: string) => `${nodeKey.length}:${nodeKey}${requestId}`;

/** Digests are equal-length hex; compared in constant time anyway (spec §3.2). */
export function digestEquals(a: string | undefined, b: string | undefined): boolean {
  if (a === undefined || b === undefined || a.length !== b.length) return false;
  return timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

/** All state of one process, shared by the operation groups (nodes, requests, responses). */
export class MemoryState {
  readonly nodes = new Map<string, NodeRec>();
  readonly pending = new Map<string, Pending>();
  readonly terminal = new Map<string, Terminal>();
  /** A terminal outcome was counted for the pair: completion counts once, late answers say "completed". */
  readonly outcomes = new Map<string, Expiring & { outcome: "completed" | TerminalStatus }>();
  readonly tombstones = new Map<string, Tombstone>();
  readonly recentlyUnregistered = new Map<string, number>();
  /** Answers by client key, oldest first (retrieve without request_id takes the oldest). */
  readonly answers = new Map<string, Map<string, StoredAnswer>>();
  answerCount = 0;
  readonly progress = new Map<string, ProgressUpdate>();
  untrackedQueued = 0;
  nodeSeq = 0;
  /** Round-robin position per exact set of tied candidates, and the global cursor (spec §7.6). */
  readonly cursors = new Map<string, number>();
  globalCursor = 0;

  constructor(
    readonly limits: MemoryLimits,
    readonly clock: Clock,
    readonly events: V1Events,
  ) {}

  now(): number {
    return this.clock.now();
  }

  isStale(node: NodeRec, now = this.now()): boolean {
    return now - node.lastSeen > node.leaseMs && node.heldUntil <= now;
  }

  liveInFlight(node: NodeRec, now = this.now()): number {
    let n = 0;
    for (const f of node.inFlight.values()) if (f.leaseUntil > now) n++;
    return n;
  }

  /** Stale, not held, and no live accounting lease: housekeeping removes it (spec §7.1). */
  isEvictable(node: NodeRec, now = this.now()): boolean {
    return this.isStale(node, now) && this.liveInFlight(node, now) === 0;
  }

  answerId(envelope: Envelope): string {
    return envelope.request_id !== undefined ? `r:${envelope.request_id}` : `u:${crypto.randomUUID()}`;
  }

  storeAnswer(envelope: Envelope, expiresAt: number): void {
    let byClient = this.answers.get(envelope.client_public_key);
    if (!byClient) this.answers.set(envelope.client_public_key, (byClient = new Map()));
    const id = this.answerId(envelope);
    if (!byClient.has(id)) this.answerCount++;
    byClient.set(id, {
      envelope,
      expiresAt,
      pair: envelope.request_id !== undefined ? pairId(envelope.client_public_key, envelope.request_id) : undefined,
    });
  }

  hasAnswer(clientKey: string, requestId: string): boolean {
    return this.answers.get(clientKey)?.has(`r:${requestId}`) ?? false;
  }

  /** Removes and returns one answer: the one for requestId, or the client's oldest. */
  takeAnswer(clientKey: string, requestId: string | undefined): StoredAnswer | undefined {
    const byClient = this.answers.get(clientKey);
    if (!byClient) return undefined;
    const id = requestId !== undefined ? `r:${requestId}` : byClient.keys().next().value;
    if (id === undefined) return undefined;
    const found = byClient.get(id);
    if (!found) return undefined;
    byClient.delete(id);
    this.answerCount--;
    if (byClient.size === 0) this.answers.delete(clientKey);
    return found;
  }

  /** Marks a pair terminal and counts its outcome once. */
  makeTerminal(pair: string, status: TerminalStatus, reason: string): void {
    const now = this.now();
    this.terminal.set(pair, { status, reason, expiresAt: now + this.limits.terminalTtlMs });
    this.countOutcome(pair, status);
    this.progress.delete(pair);
    this.pending.delete(pair);
  }

  countOutcome(pair: string, outcome: "completed" | TerminalStatus): void {
    if (this.outcomes.has(pair)) return;
    this.outcomes.set(pair, { outcome, expiresAt: this.now() + this.limits.terminalTtlMs });
    this.events.outcome(outcome);
  }

  /** Leaves the owner a "stop" signal for work it held (spec §7.5). */
  tombstone(node: NodeRec, f: InFlight, status: TerminalStatus, reason: string): void {
    this.tombstones.set(tombstoneId(node.key, f.envelope.request_id!), {
      status,
      reason,
      deadlineAt: f.deadlineAt,
      ownerDigest: node.credentialDigest,
      expiresAt: this.now() + this.limits.tombstoneTtlMs,
    });
  }

  /** Ends a request that is in flight at `node`: tombstone for the owner, terminal for the client. */
  endInFlight(node: NodeRec, f: InFlight, status: TerminalStatus, reason: string): void {
    const rid = f.envelope.request_id!;
    node.inFlight.delete(rid);
    node.requestIds.delete(rid);
    this.tombstone(node, f, status, reason);
    this.makeTerminal(f.pair, status, reason);
  }

  /** Removes a queued item from its node's queue; true when it was there. */
  dequeue(node: NodeRec, pair: string): boolean {
    const i = node.queue.findIndex((q) => q.pair === pair);
    if (i < 0) return false;
    const [item] = node.queue.splice(i, 1);
    if (item?.envelope.request_id !== undefined) node.requestIds.delete(item.envelope.request_id);
    return true;
  }

  /** Unregister and eviction share their effects (spec §6.4, §7.1). */
  removeNode(node: NodeRec, reason: EvictionReason): void {
    this.nodes.delete(node.key);
    const now = this.now();
    // A deadline that already passed wins: housekeeping expires requests before it evicts (spec §7.7).
    for (const item of node.queue) {
      if (!item.pair) this.untrackedQueued--;
      else if (item.expiresAt <= now) this.makeTerminal(item.pair, "expired", "pending_request_ttl_exceeded");
      else this.makeTerminal(item.pair, "cancelled", "server_unregistered");
    }
    node.queue = [];
    for (const f of [...node.inFlight.values()]) {
      if (f.deadlineAt <= now) this.endInFlight(node, f, "expired", "provider_timeout");
      else this.endInFlight(node, f, "cancelled", "server_unregistered");
    }
    if (reason === "unregistered") this.recentlyUnregistered.set(node.key, this.now() + RECENTLY_UNREGISTERED_MS);
    this.events.evicted(reason);
  }
}
