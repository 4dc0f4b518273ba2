import type { Envelope, ProgressResult, ProgressUpdate, RespondResult, RetrieveResult } from "../store.ts";
import { narrowed } from "../validate.ts";
import { digestEquals, envelopeBytes, pairId, type MemoryState } from "./state.ts";

/** Node answers, progress and the client's retrieval. */

export function respond(s: MemoryState, envelope: Envelope): RespondResult {
  const now = s.now();
  const rid = envelope.request_id;
  if (rid === undefined) {
    if (s.answerCount >= s.limits.maxAnswers) return { kind: "answers_full" };
    const bytes = envelopeBytes(envelope);
    if (!s.fits(bytes)) return { kind: "storage_full" };
    s.storeAnswer(envelope, now + s.limits.answerTtlMs, undefined, bytes);
    return { kind: "accepted" };
  }
  const pair = pairId(envelope.client_public_key, rid);
  const terminal = s.terminal.get(pair);
  if (terminal && terminal.expiresAt > now) return { kind: "gone", status: terminal.status };
  if (s.hasAnswer(envelope.client_public_key, rid)) return { kind: "duplicate" };
  const pending = s.pending.get(pair);
  if (!pending) {
    const outcome = s.outcomes.get(pair);
    return { kind: "gone", status: outcome && outcome.expiresAt > now && outcome.outcome === "completed" ? "completed" : "gone" };
  }
  const node = s.nodes.get(pending.nodeKey);
  if (now >= pending.deadlineAt) {
    expirePending(s, pair, "pending_request_ttl_exceeded");
    return { kind: "gone", status: "expired" };
  }
  if (s.answerCount >= s.limits.maxAnswers) return { kind: "answers_full" };
  // The request's own bytes are released below, so only the difference must fit.
  const bytes = envelopeBytes(envelope);
  if (!s.fits(bytes - pending.bytes)) return { kind: "storage_full" };
  // Owned: whether queued or in flight, the request ends here (spec §6.8 step 4).
  if (node) {
    if (pending.state === "queued") s.dequeue(node, pair);
    const f = node.inFlight.get(rid);
    if (f?.pair === pair) node.inFlight.delete(rid);
    node.requestIds.delete(rid);
  }
  s.dropPending(pair);
  s.dropProgress(pair);
  s.countOutcome(pair, "completed");
  s.storeAnswer(envelope, now + s.limits.answerTtlMs, pair, bytes);
  return { kind: "accepted" };
}

/** Deadline passed: the request ends as expired wherever it is (queued, or in flight with a tombstone). */
export function expirePending(s: MemoryState, pair: string, reason: string): void {
  const pending = s.pending.get(pair);
  if (!pending) return;
  const node = s.nodes.get(pending.nodeKey);
  if (node) {
    const f = node.inFlight.get(pending.requestId);
    if (f?.pair === pair) return s.endInFlight(node, f, "expired", reason);
    if (s.dequeue(node, pair)) node.requestIds.delete(pending.requestId);
  }
  s.makeTerminal(pair, "expired", reason);
}

export function progress(s: MemoryState, nodeKey: string, digest: string, update: ProgressUpdate): ProgressResult {
  const node = s.nodes.get(nodeKey);
  if (!node || !digestEquals(node.credentialDigest, digest)) return "forbidden";
  const f = node.inFlight.get(update.request_id);
  if (!f || f.clientKey !== update.client_public_key) return "not_active";
  if (s.now() >= f.deadlineAt) return "expired";
  // Kept as 1-byte strings when ASCII, so it costs what envelopeBytes charges: the body it came
  // from may not have been ASCII (see narrowed in ../validate.ts); at most 16 KiB, so always copied.
  const kept: ProgressUpdate = {
    ...update,
    client_public_key: f.clientKey,
    request_id: narrowed(update.request_id),
    ciphertext: narrowed(update.ciphertext),
    cipherkey: narrowed(update.cipherkey),
    iv: narrowed(update.iv),
  };
  const previous = s.progress.get(f.pair);
  if (!s.fits(envelopeBytes(kept) - (previous ? envelopeBytes(previous) : 0))) return "storage_full";
  s.setProgress(f.pair, kept);
  return "accepted";
}

export function retrieve(s: MemoryState, clientKey: string, requestId: string | undefined): RetrieveResult {
  const now = s.now();
  if (requestId === undefined) {
    const taken = s.takeAnswer(clientKey, undefined);
    if (!taken) return { kind: "unknown" };
    if (taken.pair) s.dropPending(taken.pair);
    return { kind: "answer", envelope: taken.envelope };
  }
  const pair = pairId(clientKey, requestId);
  const terminal = s.terminal.get(pair);
  if (terminal && terminal.expiresAt > now) {
    s.takeAnswer(clientKey, requestId);
    return { kind: "terminal", status: terminal.status, reason: terminal.reason };
  }
  const taken = s.takeAnswer(clientKey, requestId);
  if (taken) return { kind: "answer", envelope: taken.envelope };
  const pending = s.pending.get(pair);
  if (!pending) return { kind: "unknown" };
  if (now >= pending.deadlineAt) {
    expirePending(s, pair, "pending_request_ttl_exceeded");
    const t = s.terminal.get(pair)!;
    return { kind: "terminal", status: t.status, reason: t.reason };
  }
  const update = s.dropProgress(pair);
  return { kind: "pending", remainingMs: pending.deadlineAt - now, progress: update };
}

export function unretrieve(s: MemoryState, envelope: Envelope): void {
  s.storeAnswer(envelope, s.now() + s.limits.answerTtlMs);
}
