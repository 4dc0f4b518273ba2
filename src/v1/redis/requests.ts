import { v1Topics, type CancelResult, type EnqueueResult, type Envelope, type TerminalStatus } from "../store.ts";
import { LUA_WAKE, envelopeBytes, pairHash, script, sha256, wakeArgs, wholeMs, type RedisState } from "./state.ts";

/** Client side of a request's life: admission and cancel (memory/requests.ts). */

/**
 * ARGV: nh, ch, ph ('' = untracked), rid, envelope, cancel digest ('' = none), deadline duration,
 * max queue depth, untracked id, bytes, owner ('' = charged to no address), wake channel and
 * digest (LUA_WAKE). Admits the request with its absolute deadline (spec §6.6, §7.4), its bytes
 * charged to the owner's share, and wakes the node's held poll on every replica, if a poll of the
 * node found nothing recently (w, set by claim: otherwise nobody can be waiting).
 */
const ENQUEUE = script("Enqueue", `${LUA_WAKE(14)}
local nh, ch, ph, rid, envelope, cd = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local deadline, maxQ, uid, bytes, owner = NOW + tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11], tonumber(ARGV[12]), ARGV[13]
-- nodeTimes plus the wake mark in one read (nothing below changes the node's hash).
local f = redis.call('HMGET', kNode(nh), 'ls', 'lease', 'held', 'w')
if not f[1] then return out('unknown_node') end
local ls, lease, held = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
if isEvictable(nh, ls, lease, held) then return out('unknown_node') end
local function wakeNode()
  if tonumber(f[4] or 0) > NOW then wake() end
end
if redis.call('LLEN', kQ(nh)) >= maxQ then return out('queue_full') end
-- Live requests: every pending record plus every queued untracked request.
if redis.call('ZCARD', XDL) + redis.call('ZCARD', XUNT) >= LIM.maxRequests then return out('requests_full') end
if not fits(bytes) then return out('storage_full') end
if not fitsClient(owner, bytes) then return out('client_storage_full') end
if ph == '' then
  local exp = NOW + LIM.pendingTtlMs
  redis.call('HSET', kUreq(uid), 'env', envelope, 'b', bytes, 'o', owner, 'enq', NOW, 'exp', exp, 'node', nh)
  redis.call('ZADD', XUNT, exp, uid)
  addBytes(bytes)
  addClientBytes(owner, bytes)
  redis.call('RPUSH', kQ(nh), 'u:' .. uid)
  wakeNode()
  return out('queued')
end
-- A live id is never admitted twice (upstream queues a second copy and loses track of the first).
if redis.call('EXISTS', kReq(ph)) == 1 or hasAnswer(ch, ph) or redis.call('HEXISTS', kRids(nh), rid) == 1 then
  return out('duplicate')
end
-- A fresh admission of a finished id starts a new life instead of reporting the old end (spec §14).
dropRecord(XTERM, kTerm(ph))
dropRecord(XOUT, kOut(ph))
redis.call('RPUSH', kQ(nh), ph)
redis.call('HSET', kRids(nh), rid, ph)
redis.call('HSET', kReq(ph), 'node', nh, 'rid', rid, 'adm', NOW, 'dl', deadline, 'st', 'q', 'env', envelope, 'b', bytes, 'o', owner)
addBytes(bytes)
addClientBytes(owner, bytes)
if cd ~= '' then redis.call('HSET', kReq(ph), 'cd', cd) end
redis.call('ZADD', XDL, deadline, ph)
wakeNode()
return out('queued')
`);

/** ARGV: ph, cancel digest, status, reason. Cancel with the proof set at admission (spec §6.7). */
const CANCEL = script("Cancel", `
local ph, digest, status, reason = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local r = redis.call('HMGET', kReq(ph), 'node', 'cd', 'st')
if not r[1] or not digestEquals(r[2], digest) then return out({ k = 'forbidden' }) end
local nh = r[1]
local cred = redis.call('HGET', kNode(nh), 'cred')
local removed = 0
if cred and r[3] == 'q' and dequeue(nh, ph) then removed = 1 end
if cred and redis.call('ZSCORE', kFl(nh), ph) then endInFlight(nh, cred, ph, status, reason)
else makeTerminal(ph, status, reason) end
return out({ k = 'cancelled', removed = removed })
`);

export const REQUEST_SCRIPTS = [ENQUEUE, CANCEL];

export async function enqueue(
  s: RedisState,
  nodeKey: string,
  envelope: Envelope,
  cancelDigest: string | undefined,
  deadlineMs: number,
  maxQueueDepth: number,
  owner: string | undefined,
): Promise<EnqueueResult> {
  const rid = envelope.request_id;
  const client = envelope.client_public_key;
  return s.run<EnqueueResult>(
    ENQUEUE,
    s.keyDigest(nodeKey),
    s.keyDigest(client),
    rid === undefined ? "" : pairHash(client, rid),
    rid ?? "",
    JSON.stringify(envelope),
    cancelDigest ?? "",
    wholeMs(deadlineMs),
    maxQueueDepth,
    crypto.randomUUID(),
    envelopeBytes(envelope),
    owner === undefined ? "" : sha256(owner),
    ...wakeArgs(s, () => v1Topics.node(nodeKey), true),
  );
}

export async function cancel(s: RedisState, clientKey: string, requestId: string, cancelDigest: string, status: TerminalStatus, reason: string): Promise<CancelResult> {
  const r = await s.run<{ k: "forbidden" } | { k: "cancelled"; removed: number }>(CANCEL, pairHash(clientKey, requestId), cancelDigest, status, reason);
  return r.k === "cancelled" ? { kind: "cancelled", removedFromQueue: r.removed } : { kind: "forbidden" };
}
