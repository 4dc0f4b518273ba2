import type { Clock } from "../clock.ts";
import type { BrokerLimits } from "../config/index.ts";
import type {
  Answer, BrokerStore, EnqueueResult, ExpiredKind, Job, PushResult, StoreResult, StoreStats, StreamDrain, TouchResult,
} from "./types.ts";

type Limits = Pick<
  BrokerLimits,
  | "maxQueueDepth" | "maxNodes" | "maxAnswers" | "maxStreamSessions" | "maxStreamChunks"
  | "nodeStaleMs" | "jobTtlMs" | "answerTtlMs" | "streamTtlMs"
>;

interface NodeEntry {
  lastSeen: number;
  queue: { job: Job; expiresAt: number }[];
}

interface Session {
  clientKey: string;
  chunks: unknown[];
  final: boolean;
  touchedAt: number;
}

/**
 * Single-process state. Expiry is checked lazily on every access (so an injected clock decides
 * it exactly) and by sweep() for memory and metrics.
 *
 * A node silent past the stale timeout leaves /next_server and gets no new jobs, but what is
 * already queued stays until each job's own TTL: a node busy generating a long answer does not
 * poll, and must find its queue again when it comes back.
 */
export class MemoryStore implements BrokerStore {
  private readonly nodes = new Map<string, NodeEntry>();
  private readonly answers = new Map<string, { answer: Answer; expiresAt: number }>();
  private readonly sessions = new Map<string, Session>();
  private readonly sessionOf = new Map<string, string>();

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
    const kept = node.queue.filter((q) => q.expiresAt > now);
    if (kept.length !== node.queue.length) {
      this.onExpire("job", node.queue.length - kept.length);
      node.queue = kept;
    }
    if (!this.isFresh(node) && node.queue.length === 0) {
      this.nodes.delete(key);
      this.onExpire("node", 1);
      return undefined;
    }
    return node;
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
    this.nodes.set(key, { lastSeen: this.clock.now(), queue: [] });
    return "ok";
  }

  async pickNode(): Promise<string | undefined> {
    const live: string[] = [];
    for (const key of [...this.nodes.keys()]) if (this.liveNode(key)) live.push(key);
    return live.length === 0 ? undefined : live[Math.floor(Math.random() * live.length)];
  }

  async enqueueJob(nodeKey: string, job: Job): Promise<EnqueueResult> {
    const node = this.liveNode(nodeKey);
    if (!node) return "unknown_node";
    if (node.queue.length >= this.limits.maxQueueDepth) return "queue_full";
    node.queue.push({ job, expiresAt: this.clock.now() + this.limits.jobTtlMs });
    return "queued";
  }

  async takeJobs(nodeKey: string, max: number): Promise<Job[]> {
    const existing = this.nodes.get(nodeKey);
    const node = existing && this.prune(nodeKey, existing);
    if (!node || node.queue.length === 0) return [];
    return node.queue.splice(0, max).map((q) => q.job);
  }

  async putAnswer(clientKey: string, answer: Answer): Promise<StoreResult> {
    if (!this.answers.has(clientKey) && this.answers.size >= this.limits.maxAnswers) {
      await this.sweep();
      if (this.answers.size >= this.limits.maxAnswers) return "full";
    }
    this.answers.set(clientKey, { answer, expiresAt: this.clock.now() + this.limits.answerTtlMs });
    return "stored";
  }

  async takeAnswer(clientKey: string): Promise<Answer | undefined> {
    const entry = this.answers.get(clientKey);
    if (!entry) return undefined;
    this.answers.delete(clientKey);
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
    if (previous !== undefined) this.sessions.delete(previous);
    this.sessions.set(sessionId, { clientKey, chunks: [], final: false, touchedAt: this.clock.now() });
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

  private endSession(sessionId: string, s: Session): void {
    this.sessions.delete(sessionId);
    if (this.sessionOf.get(s.clientKey) === sessionId) this.sessionOf.delete(s.clientKey);
  }

  async pushChunk(sessionId: string, chunk: unknown, final: boolean): Promise<PushResult> {
    const s = this.liveSession(sessionId);
    if (!s) return { kind: "unknown_session" };
    if (s.final) return { kind: "already_final" };
    if (s.chunks.length >= this.limits.maxStreamChunks) return { kind: "session_full" };
    s.chunks.push(chunk);
    s.final = final;
    s.touchedAt = this.clock.now();
    return { kind: "stored", clientKey: s.clientKey };
  }

  async drainStream(clientKey: string): Promise<StreamDrain | undefined> {
    const sessionId = this.sessionOf.get(clientKey);
    if (sessionId === undefined) return undefined;
    const s = this.liveSession(sessionId);
    if (!s) return undefined;
    const chunks = s.chunks;
    s.chunks = [];
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
    return { nodes, queuedJobs, maxQueueDepth, answers: this.answers.size, streams: this.sessions.size };
  }

  async close(): Promise<void> {
    this.nodes.clear();
    this.answers.clear();
    this.sessions.clear();
    this.sessionOf.clear();
  }
}
