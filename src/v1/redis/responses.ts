import { v1Topics, type Envelope, type ProgressResult, type ProgressUpdate, type RespondResult, type RetrieveResult, type TerminalStatus } from "../store.ts";
import { LUA_WAKE, envelopeBytes, pairHash, script, wakeArgs, type RedisState } from "./state.ts";

/** Node answers, progress and the client's retrieval (memory/responses.ts). */

/**
 * ARGV: ch, ph ('' = untracked), answer id, envelope, bytes, wake channel and digest (LUA_WAKE).
 * Accepts the first answer for a live request, exactly once (spec §6.8, §7.8), and wakes the
 * client's held retrieve on every replica: an untracked answer always, a tracked one when a
 * retrieve found its request pending (w).
 */
const RESPOND = script("Respond", `${LUA_WAKE(8)}
local ch, ph, aid, envelope, bytes = ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
if ph == '' then
  if redis.call('ZCARD', XANS) >= LIM.maxAnswers then return out({ k = 'answers_full' }) end
  if not fits(bytes) then return out({ k = 'storage_full' }) end
  storeAnswer(ch, aid, envelope, bytes, NOW + LIM.answerTtlMs)
  wake()
  return out({ k = 'accepted' })
end
local st = getTerminal(ph)
if st then return out({ k = 'gone', st = st }) end
if hasAnswer(ch, ph) then return out({ k = 'duplicate' }) end
local r = redis.call('HMGET', kReq(ph), 'node', 'rid', 'dl', 'st', 'b', 'w', 'pb', 'o')
if not r[1] then
  local o = redis.call('HMGET', kOut(ph), 'o', 'exp')
  if o[1] == 'completed' and tonumber(o[2]) > NOW then return out({ k = 'gone', st = 'completed' }) end
  return out({ k = 'gone', st = 'gone' })
end
local nh, rid, dl = r[1], r[2], tonumber(r[3])
if NOW >= dl then
  expirePending(ph, 'pending_request_ttl_exceeded')
  return out({ k = 'gone', st = 'expired' })
end
if redis.call('ZCARD', XANS) >= LIM.maxAnswers then return out({ k = 'answers_full' }) end
-- The request's own bytes are released below, so only the difference must fit.
if not fits(bytes - tonumber(r[5])) then return out({ k = 'storage_full' }) end
-- Owned: whether queued or in flight, the request ends here (spec §6.8 step 4).
-- The node's times are its existence check and what lowerEvict would read again (a node hash
-- always has ls; nothing below changes it).
local node = redis.call('HMGET', kNode(nh), 'ls', 'lease', 'held')
if node[1] then
  if r[4] == 'q' then dequeue(nh, ph) end
  if redis.call('ZREM', kFl(nh), ph) == 1 then
    redis.call('ZADD', XEVICT, staleAt(tonumber(node[1]), tonumber(node[2]), tonumber(node[3])), nh)
  end
  forgetRid(nh, rid, ph)
end
releasePending(ph, r[5], r[7], r[8])
countOutcome(ph, 'completed')
-- No answer ph is stored (hasAnswer above), so storeAnswer need not look for one to replace.
storeAnswer(ch, ph, envelope, bytes, NOW + LIM.answerTtlMs, true)
-- Only a retrieve that found the request pending can be held for it (w, set by retrieve).
if r[6] then wake() end
return out({ k = 'accepted' })
`);

/** ARGV: nh, digest, ph, update, bytes. Keeps the latest update of a request in flight here (spec §6.9). */
const PROGRESS = script("Progress", `
local nh, digest, ph, update, bytes = ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
if not digestEquals(redis.call('HGET', kNode(nh), 'cred'), digest) then return out('forbidden') end
-- ph names the (client key, request_id) pair, so another client's request is never matched.
if not redis.call('ZSCORE', kFl(nh), ph) then return out('not_active') end
local r = redis.call('HMGET', kReq(ph), 'dl', 'pb')
if NOW >= tonumber(r[1]) then return out('expired') end
local previous = tonumber(r[2]) or 0
if not fits(bytes - previous) then return out('storage_full') end
redis.call('HSET', kReq(ph), 'prog', update, 'pb', bytes)
addBytes(bytes - previous)
return out('accepted')
`);

/**
 * ARGV: ch, ph ('' = no request_id: the client's oldest answer to a request without one). Takes
 * the answer once, or reports terminal or pending with the buffered progress, taking it (spec §6.10).
 */
const RETRIEVE = script("Retrieve", `
local ch, ph = ARGV[3], ARGV[4]
if ph == '' then
  local envelope = takeAnswer(ch, nil)
  if not envelope then return out({ k = 'unknown' }) end
  return outWith({ k = 'answer' }, envelope)
end
local st, rs = getTerminal(ph)
if st then
  takeAnswer(ch, ph)
  return out({ k = 'terminal', st = st, rs = rs })
end
local envelope = takeAnswer(ch, ph)
if envelope then return outWith({ k = 'answer' }, envelope) end
local r = redis.call('HMGET', kReq(ph), 'dl', 'prog', 'pb')
if not r[1] then return out({ k = 'unknown' }) end
local dl = tonumber(r[1])
if NOW >= dl then
  expirePending(ph, 'pending_request_ttl_exceeded')
  local t = redis.call('HMGET', kTerm(ph), 'st', 'rs')
  return out({ k = 'terminal', st = t[1], rs = t[2] })
end
if r[2] then
  redis.call('HDEL', kReq(ph), 'prog', 'pb')
  addBytes(-(tonumber(r[3]) or 0))
end
-- The client may now hold its retrieve on some replica: the answer must publish its wake-up.
redis.call('HSET', kReq(ph), 'w', 1)
return out({ k = 'pending', rem = dl - NOW, prog = r[2] or nil })
`);

/** ARGV: ch, answer id, envelope, bytes. Undoes a retrieve whose hand-over failed: the answer is stored again. */
const UNRETRIEVE = script("Unretrieve", `
storeAnswer(ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), NOW + LIM.answerTtlMs)
return out(true)
`);

export const RESPONSE_SCRIPTS = [RESPOND, PROGRESS, RETRIEVE, UNRETRIEVE];

/** Tracked answers are named by their pair (ph, when the caller has it already); untracked ones get a fresh id each. */
const answerId = (envelope: Envelope, ph?: string) =>
  envelope.request_id !== undefined ? (ph || pairHash(envelope.client_public_key, envelope.request_id)) : `u:${crypto.randomUUID()}`;

export async function respond(s: RedisState, envelope: Envelope): Promise<RespondResult> {
  const rid = envelope.request_id;
  const client = envelope.client_public_key;
  const ph = rid === undefined ? "" : pairHash(client, rid);
  const r = await s.run<{ k: "accepted" | "duplicate" | "answers_full" | "storage_full" } | { k: "gone"; st: TerminalStatus | "completed" | "gone" }>(
    RESPOND, s.keyDigest(client), ph, answerId(envelope, ph), JSON.stringify(envelope), envelopeBytes(envelope),
    ...wakeArgs(s, () => v1Topics.request(client, rid)),
  );
  return r.k === "gone" ? { kind: "gone", status: r.st } : { kind: r.k };
}

export async function progress(s: RedisState, nodeKey: string, digest: string, update: ProgressUpdate): Promise<ProgressResult> {
  return s.run<ProgressResult>(
    PROGRESS, s.keyDigest(nodeKey), digest, pairHash(update.client_public_key, update.request_id), JSON.stringify(update), envelopeBytes(update),
  );
}

export async function retrieve(s: RedisState, clientKey: string, requestId: string | undefined): Promise<RetrieveResult> {
  const [r, env] = await s.runWith<
    | { k: "unknown" }
    | { k: "answer" }
    | { k: "terminal"; st: TerminalStatus; rs: string }
    | { k: "pending"; rem: number; prog?: string }
  >(RETRIEVE, s.keyDigest(clientKey), requestId === undefined ? "" : pairHash(clientKey, requestId));
  switch (r.k) {
    case "unknown":
      return { kind: "unknown" };
    case "answer":
      return { kind: "answer", envelope: JSON.parse(env!) as Envelope };
    case "terminal":
      return { kind: "terminal", status: r.st, reason: r.rs };
    case "pending":
      return { kind: "pending", remainingMs: r.rem, progress: r.prog === undefined ? undefined : (JSON.parse(r.prog) as ProgressUpdate) };
  }
}

/** The answer is named by its request_id (and client key); an untracked one is stored as a new answer. */
export async function unretrieve(s: RedisState, envelope: Envelope): Promise<void> {
  await s.run(UNRETRIEVE, s.keyDigest(envelope.client_public_key), answerId(envelope), JSON.stringify(envelope), envelopeBytes(envelope));
}
