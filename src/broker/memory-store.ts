import type { Clock } from "../clock.ts";
import type { BrokerLimits } from "../config/index.ts";
import { answerBytes, chunkBytes, chunkJson, jobBytes, nodeStoredBytesLimit } from "./bytes.ts";
import type {
  Answer, BrokerStore, EnqueueResult, ExpiredKind, Job, PushResult, StoreResult, StoreStats, StreamDrain, TouchResult,
} from "./types.ts";

type Limits = Pick<
  BrokerLimits,
  | "maxQueueDepth" | "maxNodes" | "maxAnswers" | "maxStreamSessions" | "maxStreamChunks"
  | "nodeStaleMs" | "jobTtlMs" | "answerTtlMs" | "streamTtlMs" | "maxStoredBytes"
>;

interface NodeEntry {
  lastSeen: number;
  queue: { job: Job; expiresAt: number; bytes: number }[];
  /** The sum of the queue's bytes: its share of the budget. */
  bytes: number;
}

interface Session {
  clientKey: string;
  /** Undrained chunks as JSON text, what they are charged for (chunkBytes), parsed when drained. */
  chunks: string[];
  final: boolean;
  touchedAt: number;
  /** Bytes of the undrained chunks. */
  bytes: number;
}

/**
 * Single-process state. Expiry is checked lazily on every access (so an injected clock decides
 * it exactly) and by sweep() for memory and metrics.
 *
 * A node silent past the stale timeout leaves /next_server and gets no new jobs, but what is
 * already queued stays until each job's own TTL: a node busy generating a long answer does not
 * poll, and must find its queue again when it comes back.
 *
 * Stored bytes (see ./bytes.ts) are one counter, adjusted wherever a payload enters or leaves; a
 * payload that expired but was not pruned yet still counts, as in the Redis store, until a prune or
 * sweep releases it. An add that does not fit sweeps once and asks again, like the count bounds.
 */
export class MemoryStore implements BrokerStore {
  private readonly nodes = new Map<string, NodeEntry>();
  private readonly answers = new Map<string, { answer: Answer; expiresAt: number; bytes: number }>();
  private readonly sessions = new Map<string, Session>();
  private readonly sessionOf = new Map<string, string>();
  private storedBytes = 0;

  constructor(
    private readonly limits: Limits,
    private readonly clock: Clock,
    private readonly onExpire: (kind: ExpiredKind, count: number) => void = () => {},
  ) {}

  private isFresh(node: NodeEntry): boolean {
    return this.clock.now() - node.lastSeen <= this.limits.nodeStaleMs;
  }

  /** Drops the node's expired jobs, and the node itself once it is stale with nothing queued. */
  private prune(key: string, node: NodeEntry): NodeEntry | undefined {
    const now = this.clock.now();
    // Looked at on every access of the node: the queue is copied only when something expired.
    if (node.queue.some((q) => q.expiresAt <= now)) {
      const kept = node.queue.filter((q) => q.expiresAt > now);
      this.onExpire("job", node.queue.length - kept.length);
      this.releaseJobs(node, node.queue.filter((q) => q.expiresAt <= now));
      node.queue = kept;
    }
    if (!this.isFresh(node) && node.queue.length === 0) {
      this.nodes.delete(key);
      // Nothing queued, so nothing held: node.bytes is 0 here.
      this.onExpire("node", 1);
      return undefined;
    }
    return node;
  }

  private releaseJobs(node: NodeEntry, gone: { bytes: number }[]): void {
    let n = 0;
    for (const q of gone) n += q.bytes;
    node.bytes -= n;
    this.storedBytes -= n;
  }

  /** Whether `bytes` more fit the budget (negative: a replacement that shrinks always fits). */
  private fits(bytes: number): boolean {
    return this.storedBytes + bytes <= this.limits.maxStoredBytes;
  }

  /** At the byte budget, sweep once and ask again (as the Redis store does, one transition each). */
  private async roomAfterSweep<T>(attempt: () => T, full: (result: T) => boolean): Promise<T> {
    const first = attempt();
    if (!full(first)) return first;
    await this.sweep();
    return attempt();
  }

  private liveNode(key: string): NodeEntry | undefined {
    const node = this.nodes.get(key);
    if (!node) return undefined;
    const kept = this.prune(key, node);
    return kept && this.isFresh(kept) ? kept : undefined;
  }

  async touchNode(key: string): Promise<TouchResult> {
    const existing = this.nodes.get(key);
    const node = existing && this.prune(key, existing);
    if (node) {
      node.lastSeen = this.clock.now();
      return "ok";
    }
    if (this.nodes.size >= this.limits.maxNodes) {
      await this.sweep();
      if (this.nodes.size >= this.limits.maxNodes) return "full";
    }
    this.nodes.set(key, { lastSeen: this.clock.now(), queue: [], bytes: 0 });
    return "ok";
  }

  async pickNode(): Promise<string | undefined> {
    const live: string[] = [];
    for (const key of [...this.nodes.keys()]) if (this.liveNode(key)) live.push(key);
    return live.length === 0 ? undefined : live[Math.floor(Math.random() * live.length)];
  }

  async enqueueJob(nodeKey: string, job: Job): Promise<EnqueueResult> {
    const bytes = jobBytes(job);
    return this.roomAfterSweep(() => this.tryEnqueue(nodeKey, job, bytes), (r) => r === "storage_full");
  }

  private tryEnqueue(nodeKey: string, job: Job, bytes: number): EnqueueResult {
    const node = this.liveNode(nodeKey);
    if (!node) return "unknown_node";
    if (node.queue.length >= this.limits.maxQueueDepth) return "queue_full";
    if (node.bytes + bytes > nodeStoredBytesLimit(this.limits.maxStoredBytes)) return "node_storage_full";
    if (!this.fits(bytes)) return "storage_full";
    node.queue.push({ job, expiresAt: this.clock.now() + this.limits.jobTtlMs, bytes });
    node.bytes += bytes;
    this.storedBytes += bytes;
    return "queued";
  }

  async takeJobs(nodeKey: string, max: number): Promise<Job[]> {
    const existing = this.nodes.get(nodeKey);
    const node = existing && this.prune(nodeKey, existing);
    if (!node || node.queue.length === 0) return [];
    const taken = node.queue.splice(0, max);
    this.releaseJobs(node, taken);
    return taken.map((q) => q.job);
  }

  async putAnswer(clientKey: string, answer: Answer): Promise<StoreResult> {
    const bytes = answerBytes(answer);
    return this.roomAfterSweep(() => this.tryPutAnswer(clientKey, answer, bytes), (r) => r !== "stored");
  }

  /** Replacing an uncollected answer (even an expired one not yet swept) is not growth: only the difference counts. */
  private tryPutAnswer(clientKey: string, answer: Answer, bytes: number): StoreResult {
    const previous = this.answers.get(clientKey);
    if (!previous && this.answers.size >= this.limits.maxAnswers) return "full";
    const delta = bytes - (previous?.bytes ?? 0);
    if (!this.fits(delta)) return "storage_full";
    this.answers.set(clientKey, { answer, expiresAt: this.clock.now() + this.limits.answerTtlMs, bytes });
    this.storedBytes += delta;
    return "stored";
  }

  async takeAnswer(clientKey: string): Promise<Answer | undefined> {
    const entry = this.answers.get(clientKey);
    if (!entry) return undefined;
    this.answers.delete(clientKey);
    this.storedBytes -= entry.bytes;
    if (entry.expiresAt < this.clock.now()) {
      this.onExpire("answer", 1);
      return undefined;
    }
    return entry.answer;
  }

  async canOpenStream(): Promise<boolean> {
    if (this.sessions.size < this.limits.maxStreamSessions) return true;
    await this.sweep();
    return this.sessions.size < this.limits.maxStreamSessions;
  }

  async openStream(clientKey: string, sessionId: string): Promise<void> {
    const previous = this.sessionOf.get(clientKey);
    if (previous !== undefined) {
      this.dropChunks(this.sessions.get(previous));
      this.sessions.delete(previous);
    }
    // A reused session id starts empty (ids are fresh UUIDs; this only keeps the count exact).
    this.dropChunks(this.sessions.get(sessionId));
    this.sessions.set(sessionId, { clientKey, chunks: [], final: false, touchedAt: this.clock.now(), bytes: 0 });
    this.sessionOf.set(clientKey, sessionId);
  }

  private liveSession(sessionId: string): Session | undefined {
    const s = this.sessions.get(sessionId);
    if (!s) return undefined;
    if (this.clock.now() - s.touchedAt > this.limits.streamTtlMs) {
      this.endSession(sessionId, s);
      this.onExpire("stream", 1);
      return undefined;
    }
    return s;
  }

  /** Releases a session's undrained chunks. */
  private dropChunks(s: Session | undefined): void {
    if (!s) return;
    this.storedBytes -= s.bytes;
    s.bytes = 0;
    s.chunks = [];
  }

  private endSession(sessionId: string, s: Session): void {
    this.dropChunks(s);
    this.sessions.delete(sessionId);
    if (this.sessionOf.get(s.clientKey) === sessionId) this.sessionOf.delete(s.clientKey);
  }

  async pushChunk(sessionId: string, chunk: unknown, final: boolean): Promise<PushResult> {
    const json = chunkJson(chunk);
    const bytes = chunkBytes(json);
    return this.roomAfterSweep(() => this.tryPush(sessionId, json, final, bytes), (r) => r.kind === "storage_full");
  }

  private tryPush(sessionId: string, json: string, final: boolean, bytes: number): PushResult {
    const s = this.liveSession(sessionId);
    if (!s) return { kind: "unknown_session" };
    if (s.final) return { kind: "already_final" };
    if (s.chunks.length >= this.limits.maxStreamChunks) return { kind: "session_full" };
    if (!this.fits(bytes)) return { kind: "storage_full" };
    s.chunks.push(json);
    s.bytes += bytes;
    this.storedBytes += bytes;
    s.final = final;
    s.touchedAt = this.clock.now();
    return { kind: "stored", clientKey: s.clientKey };
  }

  async drainStream(clientKey: string): Promise<StreamDrain | undefined> {
    const sessionId = this.sessionOf.get(clientKey);
    if (sessionId === undefined) return undefined;
    const s = this.liveSession(sessionId);
    if (!s) return undefined;
    const chunks = s.chunks.map((json) => JSON.parse(json) as unknown);
    this.dropChunks(s);
    s.touchedAt = this.clock.now();
    if (s.final) this.endSession(sessionId, s);
    return { sessionId, chunks, final: s.final };
  }

  async sweep(): Promise<void> {
    for (const [key, node] of [...this.nodes]) this.prune(key, node);
    const now = this.clock.now();
    for (const [key, entry] of [...this.answers]) {
      if (entry.expiresAt < now) {
        this.answers.delete(key);
        this.storedBytes -= entry.bytes;
        this.onExpire("answer", 1);
      }
    }
    for (const id of [...this.sessions.keys()]) this.liveSession(id);
  }

  async stats(): Promise<StoreStats> {
    let nodes = 0;
    let queuedJobs = 0;
    let maxQueueDepth = 0;
    const now = this.clock.now();
    for (const node of this.nodes.values()) {
      // Jobs of a briefly stale (busy) node are still waiting for it: count them.
      const waiting = node.queue.filter((q) => q.expiresAt > now).length;
      queuedJobs += waiting;
      maxQueueDepth = Math.max(maxQueueDepth, waiting);
      if (now - node.lastSeen <= this.limits.nodeStaleMs) nodes++;
    }
    return { nodes, queuedJobs, maxQueueDepth, answers: this.answers.size, streams: this.sessions.size, storedBytes: this.storedBytes };
  }

  async close(): Promise<void> {
    this.nodes.clear();
    this.answers.clear();
    this.sessions.clear();
    this.sessionOf.clear();
    this.storedBytes = 0;
  }
}
