import type { Clock } from "../../clock.ts";
import type {
  Capabilities, Envelope, NodeView, ProgressUpdate, SelectQuery, TerminalStatus, V1Events, V1Stats, V1Store,
} from "../store.ts";
import * as nodes from "./nodes.ts";
import * as requests from "./requests.ts";
import * as responses from "./responses.ts";
import { MemoryState, type MemoryLimits } from "./state.ts";

export type { MemoryLimits };

export const noEvents: V1Events = { evicted() {}, outcome() {}, dropped() {} };

/**
 * API v1 state in this process. Every transition runs synchronously inside one call, so on one
 * event loop it is atomic (spec §7.8: exactly one terminal transition wins). All of it is lost
 * when the process stops; close() reports how much.
 */
export class MemoryV1Store implements V1Store {
  private readonly s: MemoryState;

  constructor(
    limits: MemoryLimits & { leaseMs: number },
    clock: Clock,
    events: V1Events = noEvents,
  ) {
    this.s = new MemoryState(limits, clock, events);
    this.leaseMs = limits.leaseMs;
  }
  private readonly leaseMs: number;

  async register(key: string, capabilities: Capabilities, credentialDigest: string) {
    return nodes.register(this.s, key, capabilities, credentialDigest, this.leaseMs);
  }
  async claim(key: string, capabilities: Capabilities | undefined, holdMs: number) {
    return nodes.claim(this.s, key, capabilities, this.s.now() + holdMs);
  }
  async release(key: string, envelope: Envelope) {
    nodes.release(this.s, key, envelope);
  }
  async select(query: SelectQuery) {
    return nodes.select(this.s, query);
  }
  async enqueue(key: string, envelope: Envelope, cancelDigest: string | undefined, deadlineMs: number, maxQueueDepth: number, owner?: string) {
    return requests.enqueue(this.s, key, envelope, cancelDigest, this.s.now() + deadlineMs, maxQueueDepth, owner);
  }
  async control(key: string, requestId: string, digest: string | undefined, acknowledge: boolean) {
    return nodes.control(this.s, key, requestId, digest, acknowledge);
  }
  async unregister(key: string, proof: { credentialDigest: string | undefined } | "operator") {
    return nodes.unregister(this.s, key, proof);
  }
  async respond(envelope: Envelope) {
    return responses.respond(this.s, envelope);
  }
  async progress(key: string, digest: string, update: ProgressUpdate) {
    return responses.progress(this.s, key, digest, update);
  }
  async retrieve(clientKey: string, requestId: string | undefined) {
    return responses.retrieve(this.s, clientKey, requestId);
  }
  async unretrieve(envelope: Envelope) {
    responses.unretrieve(this.s, envelope);
  }
  async cancel(clientKey: string, requestId: string, digest: string, status: TerminalStatus, reason: string) {
    return requests.cancel(this.s, clientKey, requestId, digest, status, reason);
  }

  /** Housekeeping in upstream's order (spec §7.7). */
  async sweep(): Promise<void> {
    const s = this.s;
    const now = s.now();
    for (const map of [s.terminal, s.outcomes, s.tombstones]) {
      for (const [id, rec] of map) if (rec.expiresAt <= now) map.delete(id);
    }
    for (const [pair, p] of s.pending) {
      if (p.deadlineAt <= now) responses.expirePending(s, pair, p.state === "queued" ? "pending_request_ttl_exceeded" : "provider_timeout");
    }
    let untracked = 0;
    for (const node of s.nodes.values()) {
      node.queue = node.queue.filter((q) => {
        if (q.pair !== undefined || q.expiresAt > now) return true;
        s.dropUntracked(q);
        untracked++;
        return false;
      });
    }
    if (untracked > 0) s.events.dropped("untracked_request", untracked);
    let answers = 0;
    for (const [clientKey, byClient] of s.answers) {
      for (const [id, a] of byClient) {
        if (a.expiresAt > now) continue;
        byClient.delete(id);
        s.answerCount--;
        s.storedBytes -= a.bytes;
        answers++;
      }
      if (byClient.size === 0) s.answers.delete(clientKey);
    }
    if (answers > 0) s.events.dropped("answer", answers);
    for (const node of [...s.nodes.values()]) if (s.isEvictable(node, now)) s.removeNode(node, "stale_lease");
  }

  async diagnostics(): Promise<NodeView[]> {
    const now = this.s.now();
    return [...this.s.nodes.values()].map((n) => ({
      key: n.key,
      capabilities: n.capabilities,
      queueDepth: n.queue.length,
      inFlight: this.s.liveInFlight(n, now),
      ageSeconds: (now - n.lastSeen) / 1000,
      leaseSeconds: n.leaseMs / 1000,
    }));
  }

  async stats(): Promise<V1Stats> {
    const s = this.s;
    const now = s.now();
    const st: V1Stats = { nodes: s.nodes.size, healthyNodes: 0, queued: 0, oldestQueuedAgeSeconds: 0, inFlight: 0, oldestInFlightAgeSeconds: 0, oldestLeaseAgeSeconds: 0, answers: s.answerCount, storedBytes: s.storedBytes, clientsHoldingBytes: s.clientBytes.size };
    for (const n of s.nodes.values()) {
      if (!s.isStale(n, now)) st.healthyNodes++;
      st.queued += n.queue.length;
      st.oldestLeaseAgeSeconds = Math.max(st.oldestLeaseAgeSeconds, (now - n.lastSeen) / 1000);
      const head = n.queue[0];
      if (head) st.oldestQueuedAgeSeconds = Math.max(st.oldestQueuedAgeSeconds, (now - head.enqueuedAt) / 1000);
      for (const f of n.inFlight.values()) {
        st.inFlight++;
        st.oldestInFlightAgeSeconds = Math.max(st.oldestInFlightAgeSeconds, (now - f.startedAt) / 1000);
      }
    }
    return st;
  }

  async close(): Promise<V1Stats> {
    const left = await this.stats();
    this.s.nodes.clear();
    this.s.pending.clear();
    this.s.answers.clear();
    this.s.answerCount = 0;
    this.s.clientBytes.clear();
    return left;
  }
}
