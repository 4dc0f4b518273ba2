import type { CancelResult, EnqueueResult, Envelope, TerminalStatus } from "../store.ts";
import { digestEquals, envelopeBytes, pairId, type MemoryState } from "./state.ts";

/** Client side of a request's life: admission and cancel. */

export function enqueue(
  s: MemoryState,
  nodeKey: string,
  envelope: Envelope,
  cancelDigest: string | undefined,
  deadlineAt: number,
  maxQueueDepth: number,
  owner: string | undefined,
): EnqueueResult {
  const node = s.nodes.get(nodeKey);
  if (!node || s.isEvictable(node)) return "unknown_node";
  if (node.queue.length >= maxQueueDepth) return "queue_full";
  if (s.pending.size + s.untrackedQueued >= s.limits.maxRequests) return "requests_full";
  const bytes = envelopeBytes(envelope);
  if (!s.fits(bytes)) return "storage_full";
  if (!s.fitsClient(owner, bytes)) return "client_storage_full";
  const now = s.now();
  const rid = envelope.request_id;
  if (rid === undefined) {
    node.queue.push({ envelope, enqueuedAt: now, expiresAt: now + s.limits.pendingTtlMs, bytes, owner });
    s.untrackedQueued++;
    s.storedBytes += bytes;
    s.chargeClient(owner, bytes);
    return "queued";
  }
  const pair = pairId(envelope.client_public_key, rid);
  // A live id is never admitted twice (upstream queues a second copy and loses track of the first).
  if (s.pending.has(pair) || s.hasAnswer(envelope.client_public_key, rid) || node.requestIds.has(rid)) return "duplicate";
  // A fresh admission of a finished id starts a new life instead of reporting the old end (spec §14).
  s.terminal.delete(pair);
  s.outcomes.delete(pair);
  node.queue.push({ envelope, pair, enqueuedAt: now, expiresAt: deadlineAt });
  node.requestIds.add(rid);
  s.pending.set(pair, { nodeKey, clientKey: envelope.client_public_key, requestId: rid, admittedAt: now, deadlineAt, cancelDigest, state: "queued", bytes, owner });
  s.storedBytes += bytes;
  s.chargeClient(owner, bytes);
  return "queued";
}

export function cancel(s: MemoryState, clientKey: string, requestId: string, cancelDigest: string, status: TerminalStatus, reason: string): CancelResult {
  const pair = pairId(clientKey, requestId);
  const pending = s.pending.get(pair);
  if (!pending || !digestEquals(pending.cancelDigest, cancelDigest)) return { kind: "forbidden" };
  const node = s.nodes.get(pending.nodeKey);
  let removedFromQueue = 0;
  if (node && pending.state === "queued" && s.dequeue(node, pair)) removedFromQueue = 1;
  const f = node?.inFlight.get(requestId);
  if (node && f && f.pair === pair) s.endInFlight(node, f, status, reason);
  else s.makeTerminal(pair, status, reason);
  return { kind: "cancelled", removedFromQueue };
}
