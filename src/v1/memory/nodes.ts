import { CONTEXT_TIERS, type Capabilities, type ClaimResult, type ControlResult, type Envelope, type NodeLoad, type RegisterResult, type SelectQuery, type SelectResult, type UnregisterResult } from "../store.ts";
import { digestEquals, envelopeBytes, pairId, tombstoneId, type MemoryState, type NodeRec } from "./state.ts";

/** Node lifecycle: register, claim (poll), release, select, control, unregister. */

export function register(s: MemoryState, key: string, capabilities: Capabilities, credentialDigest: string, leaseMs: number): RegisterResult {
  const now = s.now();
  const existing = s.nodes.get(key);
  if (existing && !s.isEvictable(existing, now)) {
    existing.lastSeen = now;
    existing.leaseMs = leaseMs;
    existing.capabilities = capabilities;
    return { kind: "registered", credentialIssued: false };
  }
  if (existing) s.removeNode(existing, "stale_lease");
  if (s.nodes.size >= s.limits.maxNodes) return { kind: "nodes_full" };
  s.nodes.set(key, {
    key,
    seq: ++s.nodeSeq,
    capabilities,
    credentialDigest,
    lastSeen: now,
    leaseMs,
    heldUntil: 0,
    queue: [],
    inFlight: new Map(),
    requestIds: new Set(),
  });
  return { kind: "registered", credentialIssued: true };
}

/** A node that housekeeping would have evicted is gone for every route that names it. */
function liveNode(s: MemoryState, key: string): NodeRec | undefined {
  const node = s.nodes.get(key);
  if (node && s.isEvictable(node)) {
    s.removeNode(node, "stale_lease");
    return undefined;
  }
  return node;
}

export function claim(s: MemoryState, key: string, capabilities: Capabilities | undefined, heldUntil: number): ClaimResult {
  const node = liveNode(s, key);
  if (!node) return { kind: "unknown_node" };
  const now = s.now();
  node.lastSeen = now;
  node.heldUntil = heldUntil;
  if (capabilities) node.capabilities = capabilities;
  for (;;) {
    const item = node.queue.shift();
    if (!item) return { kind: "empty" };
    const rid = item.envelope.request_id;
    if (!item.pair || rid === undefined) {
      s.dropUntracked(item);
      if (item.expiresAt <= now) continue;
      return { kind: "work", envelope: item.envelope };
    }
    const pending = s.pending.get(item.pair);
    if (!pending) {
      node.requestIds.delete(rid);
      continue;
    }
    if (item.expiresAt <= now) {
      // A dead request at the head of the queue is dropped and the claim goes on (spec §6.2).
      node.requestIds.delete(rid);
      s.makeTerminal(item.pair, "expired", "provider_timeout");
      continue;
    }
    pending.state = "in_flight";
    node.inFlight.set(rid, {
      pair: item.pair,
      clientKey: item.envelope.client_public_key,
      envelope: item.envelope,
      deadlineAt: pending.deadlineAt,
      startedAt: now,
      leaseUntil: Math.min(now + s.limits.inFlightTtlMs, pending.deadlineAt),
    });
    return { kind: "work", envelope: item.envelope, remainingMs: pending.deadlineAt - now };
  }
}

export function release(s: MemoryState, key: string, envelope: Envelope): void {
  const node = s.nodes.get(key);
  if (!node) return;
  const rid = envelope.request_id;
  if (rid === undefined) {
    const bytes = envelopeBytes(envelope);
    node.queue.unshift({ envelope, enqueuedAt: s.now(), expiresAt: s.now() + s.limits.pendingTtlMs, bytes });
    s.untrackedQueued++;
    s.storedBytes += bytes;
    return;
  }
  const f = node.inFlight.get(rid);
  const pending = f && s.pending.get(f.pair);
  if (!f || !pending || f.envelope !== envelope) return;
  node.inFlight.delete(rid);
  pending.state = "queued";
  node.queue.unshift({ envelope, pair: f.pair, enqueuedAt: pending.admittedAt, expiresAt: pending.deadlineAt });
}

const tierRank = (t: keyof typeof CONTEXT_TIERS) => CONTEXT_TIERS[t];

/** best_fit_smallest_capable_least_loaded_v1 (spec §6.5). */
export function select(s: MemoryState, q: SelectQuery): SelectResult {
  if (s.nodes.size === 0) return { kind: "no_registered_compute_nodes" };
  const now = s.now();
  const wanted = tierRank(q.tier);
  const matching: (NodeLoad & { seq: number })[] = [];
  for (const node of s.nodes.values()) {
    const c = node.capabilities;
    if (s.isStale(node, now)) continue;
    if (tierRank(c.active_context_tier) < wanted || c.maximum_total_context_tokens < tierRank(c.active_context_tier)) continue;
    if (!c.supported_model_ids.includes(q.model)) continue;
    matching.push({ key: node.key, seq: node.seq, capabilities: c, queueDepth: node.queue.length, inFlight: s.liveInFlight(node, now) });
  }
  if (matching.length === 0) return { kind: "no_matching_compute_node" };
  const limited = matching.filter((n) => n.inFlight >= n.capabilities.max_concurrency || n.queueDepth >= q.maxQueueDepth);
  const eligible = matching.filter((n) => !limited.includes(n));
  if (eligible.length === 0) return { kind: "no_available_capacity", capacityLimited: limited.map(strip) };
  const load = (n: NodeLoad) => (n.queueDepth + n.inFlight) / n.capabilities.max_concurrency;
  const best = Math.min(...eligible.map((n) => tierRank(n.capabilities.active_context_tier)));
  const smallest = eligible.filter((n) => tierRank(n.capabilities.active_context_tier) === best);
  const lowest = Math.min(...smallest.map(load));
  const tied = smallest.filter((n) => load(n) === lowest).sort((a, b) => a.seq - b.seq);
  // Registration sequence numbers name a tie set compactly (keys are kilobytes each).
  const setId = tied.map((n) => n.seq).join(",");
  const start = s.cursors.get(setId) ?? s.globalCursor;
  const chosen = tied[start % tied.length]!;
  // Bounded: one entry per distinct tie set seen recently.
  if (s.cursors.size >= 1024 && !s.cursors.has(setId)) s.cursors.clear();
  s.cursors.set(setId, (start + 1) % tied.length);
  s.globalCursor = (s.globalCursor + 1) % Math.max(s.nodes.size, 1);
  return { kind: "selected", node: strip(chosen), eligible: eligible.map(strip) };
}

const strip = ({ key, capabilities, queueDepth, inFlight }: NodeLoad): NodeLoad => ({ key, capabilities, queueDepth, inFlight });

export function control(s: MemoryState, key: string, requestId: string, digest: string | undefined, acknowledge: boolean): ControlResult {
  const node = liveNode(s, key);
  const now = s.now();
  if (node) {
    if (!digestEquals(node.credentialDigest, digest)) return { kind: "forbidden" };
    const f = node.inFlight.get(requestId);
    if (f) {
      if (now >= f.deadlineAt) s.endInFlight(node, f, "expired", "provider_timeout");
      else {
        f.leaseUntil = Math.min(now + s.limits.inFlightTtlMs, f.deadlineAt);
        return { kind: "active", remainingMs: f.deadlineAt - now };
      }
    }
  }
  const id = tombstoneId(key, requestId);
  const tomb = s.tombstones.get(id);
  if (tomb && tomb.expiresAt > now) {
    if (!digestEquals(tomb.ownerDigest, digest)) return { kind: "forbidden" };
    if (acknowledge) s.tombstones.delete(id);
    return { kind: "tombstone", status: tomb.status, remainingMs: Math.max(0, tomb.deadlineAt - now) };
  }
  return node ? { kind: "completed_unavailable" } : { kind: "forbidden" };
}

export function unregister(s: MemoryState, key: string, proof: { credentialDigest: string | undefined } | "operator"): UnregisterResult {
  const node = s.nodes.get(key);
  if (!node) return "not_found";
  if (proof !== "operator" && !digestEquals(node.credentialDigest, proof.credentialDigest)) return "forbidden";
  s.removeNode(node, "unregistered");
  return "removed";
}

/** Whether `requestId` may be admitted for this node (ids are unique per node while live). */
export const requestIdFree = (node: NodeRec, requestId: string) => !node.requestIds.has(requestId);
export { pairId };
