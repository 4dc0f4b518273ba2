import { CONTEXT_TIERS, type Capabilities, type ClaimResult, type ControlResult, type Envelope, type NodeLoad, type RegisterResult, type SelectQuery, type SelectResult, type UnregisterResult } from "../store.ts";
import { envelopeBytes, list, pairHash, script, wholeMs, type RedisState } from "./state.ts";

/** Node lifecycle: register, claim (poll), release, select, control, unregister (memory/nodes.ts). */

/** ARGV: nh, key, caps, cred, lease. A live key is renewed in place; a new one appended (spec §6.1). */
const REGISTER = script("Register", `
local nh, key, caps, cred, lease = ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
local ls, oldLease, held = nodeTimes(nh)
if ls then
  if not isEvictable(nh, ls, oldLease, held) then
    -- Renewal never rotates the credential (spec §3.2).
    redis.call('HSET', kNode(nh), 'ls', NOW, 'lease', lease, 'caps', caps)
    redis.call('ZADD', XEVICT, staleAt(NOW, lease, held), nh)
    return out({ k = 'registered', issued = false })
  end
  removeNode(nh, 'stale_lease')
end
if redis.call('ZCARD', KN) >= LIM.maxNodes then return out({ k = 'nodes_full' }) end
local seq = redis.call('INCR', KSEQ)
redis.call('HSET', kNode(nh), 'key', key, 'seq', seq, 'caps', caps, 'cred', cred, 'ls', NOW, 'lease', lease, 'held', 0)
redis.call('ZADD', KN, seq, nh)
redis.call('ZADD', XEVICT, staleAt(NOW, lease, 0), nh)
return out({ k = 'registered', issued = true })
`);

/**
 * ARGV: nh, caps ('' = keep), hold. Renews the lease, holds the node for the poll, and claims the
 * oldest live request, dropping dead heads (spec §6.2). An empty queue marks the node as possibly
 * waiting (w), so that admissions wake it.
 */
const CLAIM = script("Claim", `
local nh, caps, hold = ARGV[3], ARGV[4], tonumber(ARGV[5])
local ls, lease, held = nodeTimes(nh)
if not ls then return out({ k = 'unknown_node' }) end
-- A node that housekeeping would have evicted is gone for every route that names it.
if isEvictable(nh, ls, lease, held) then
  removeNode(nh, 'stale_lease')
  return out({ k = 'unknown_node' })
end
held = math.ceil(NOW + hold)
redis.call('HSET', kNode(nh), 'ls', NOW, 'held', held)
if caps ~= '' then redis.call('HSET', kNode(nh), 'caps', caps) end
redis.call('ZADD', XEVICT, staleAt(NOW, lease, held), nh)
while true do
  local item = redis.call('LPOP', kQ(nh))
  if not item then
    -- The poll may now be held on some replica: until it can have ended, an admission for this
    -- node publishes its wake-up (w; see LUA_WAKE). With work found, nobody waits and nothing is published.
    -- The mark only grows: another poll of this node may be held elsewhere for longer (a node with
    -- several pollers, or one that re-polled through the other replica), and a poll's last look
    -- (hold 0) holds nothing, so it must not shorten the mark under that other poll.
    if hold > 0 then
      local w = math.ceil(NOW + hold) + WAKE_MARGIN_MS
      if w > (tonumber(redis.call('HGET', kNode(nh), 'w')) or 0) then redis.call('HSET', kNode(nh), 'w', w) end
    end
    return out({ k = 'empty' })
  end
  if isUntracked(item) then
    local id = string.sub(item, 3)
    local u = redis.call('HMGET', kUreq(id), 'env', 'exp')
    dropUntracked(id)
    if u[1] and tonumber(u[2]) > NOW then return outWith({ k = 'work' }, u[1]) end
  else
    local r = redis.call('HMGET', kReq(item), 'rid', 'dl', 'env')
    local dl = tonumber(r[2])
    if r[1] and dl <= NOW then
      -- A dead request at the head of the queue is dropped and the claim goes on (spec §6.2).
      forgetRid(nh, r[1], item)
      makeTerminal(item, 'expired', 'provider_timeout')
    elseif r[1] then
      redis.call('HSET', kReq(item), 'st', 'f', 'started', NOW)
      redis.call('ZADD', kFl(nh), math.min(NOW + LIM.inFlightTtlMs, dl), item)
      return outWith({ k = 'work', rem = dl - NOW }, r[3])
    end
  end
end
`);

/**
 * ARGV: nh, ph ('' = untracked), rid, envelope, untracked id, bytes. Undoes a claim whose hand-over
 * failed: a tracked request still in flight here goes back to the head with its admission time.
 */
const RELEASE = script("Release", `
local nh, ph, rid, envelope, uid, bytes = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
if redis.call('EXISTS', kNode(nh)) == 0 then return out(false) end
if ph == '' then
  local exp = NOW + LIM.pendingTtlMs
  redis.call('HSET', kUreq(uid), 'env', envelope, 'b', bytes, 'enq', NOW, 'exp', exp, 'node', nh)
  redis.call('ZADD', XUNT, exp, uid)
  addBytes(bytes)
  redis.call('LPUSH', kQ(nh), 'u:' .. uid)
  return out(true)
end
if redis.call('HGET', kRids(nh), rid) ~= ph or not redis.call('ZSCORE', kFl(nh), ph) then return out(false) end
if redis.call('EXISTS', kReq(ph)) == 0 then return out(false) end
redis.call('ZREM', kFl(nh), ph)
redis.call('HSET', kReq(ph), 'st', 'q')
redis.call('LPUSH', kQ(nh), ph)
lowerEvict(nh)
return out(true)
`);

const TIER_TABLE = `{ ${Object.entries(CONTEXT_TIERS).map(([tier, tokens]) => `[${JSON.stringify(tier)}] = ${tokens}`).join(", ")} }`;

/**
 * ARGV: model, wanted tier tokens, max queue depth. best_fit_smallest_capable_least_loaded_v1
 * (spec §6.5) over live nodes in registration order, bounded by the node bound; round robin among
 * ties by a cursor per tie set (spec §7.6), kept in the datastore so every replica shares it.
 */
const SELECT = script("Select", `
local TIERS = ${TIER_TABLE}
local model, wanted, maxQ = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local all = redis.call('ZRANGE', KN, 0, -1, 'WITHSCORES')
if #all == 0 then return out({ k = 'no_registered_compute_nodes' }) end
local function supports(ids)
  for _, id in ipairs(ids) do if id == model then return true end end
  return false
end
local matching = {}
for i = 1, #all, 2 do
  local nh = all[i]
  local f = redis.call('HMGET', kNode(nh), 'key', 'caps', 'ls', 'lease', 'held')
  if f[1] and not isStale(tonumber(f[3]), tonumber(f[4]), tonumber(f[5])) then
    local c = cjson.decode(f[2])
    local rank = TIERS[c.active_context_tier]
    if rank and rank >= wanted and c.maximum_total_context_tokens >= rank and type(c.supported_model_ids) == 'table' and supports(c.supported_model_ids) then
      matching[#matching + 1] = { seq = all[i + 1], key = f[1], caps = f[2], rank = rank, conc = c.max_concurrency, q = redis.call('LLEN', kQ(nh)), fl = liveInFlight(nh) }
    end
  end
end
if #matching == 0 then return out({ k = 'no_matching_compute_node' }) end
local view = function(n) return { n.key, n.caps, n.q, n.fl } end
local eligible, limited = {}, {}
for _, n in ipairs(matching) do
  if n.fl >= n.conc or n.q >= maxQ then limited[#limited + 1] = view(n) else eligible[#eligible + 1] = n end
end
if #eligible == 0 then return out({ k = 'no_available_capacity', limited = limited }) end
local best = math.huge
for _, n in ipairs(eligible) do best = math.min(best, n.rank) end
local lowest = math.huge
for _, n in ipairs(eligible) do if n.rank == best then lowest = math.min(lowest, (n.q + n.fl) / n.conc) end end
local tied, seqs = {}, {}
for i, n in ipairs(eligible) do
  if n.rank == best and (n.q + n.fl) / n.conc == lowest then
    tied[#tied + 1] = i
    seqs[#seqs + 1] = n.seq
  end
end
-- Registration sequence numbers name a tie set; hashed, so a field stays small with many nodes.
local setId = redis.sha1hex(table.concat(seqs, ','))
local start = tonumber(redis.call('HGET', KRR, setId) or redis.call('GET', KRRG) or 0)
local chosen = tied[(start % #tied) + 1]
-- Bounded: one entry per distinct tie set seen recently.
if redis.call('HLEN', KRR) >= 1024 and redis.call('HEXISTS', KRR, setId) == 0 then redis.call('DEL', KRR) end
redis.call('HSET', KRR, setId, (start + 1) % #tied)
redis.call('SET', KRRG, (tonumber(redis.call('GET', KRRG) or 0) + 1) % math.max(#all / 2, 1))
local views = {}
for _, n in ipairs(eligible) do views[#views + 1] = view(n) end
return out({ k = 'selected', chosen = chosen, eligible = views })
`);

/** ARGV: nh, rid, digest ('' = none), acknowledge (1|0). Owner view of one request (spec §6.3). */
const CONTROL = script("Control", `
local nh, rid, digest, ack = ARGV[3], ARGV[4], ARGV[5], ARGV[6] == '1'
local ls, lease, held = nodeTimes(nh)
if ls and isEvictable(nh, ls, lease, held) then
  removeNode(nh, 'stale_lease')
  ls = nil
end
if ls then
  local cred = redis.call('HGET', kNode(nh), 'cred')
  if not digestEquals(cred, digest) then return out({ k = 'forbidden' }) end
  local ph = redis.call('HGET', kRids(nh), rid)
  if ph and redis.call('ZSCORE', kFl(nh), ph) then
    local dl = tonumber(redis.call('HGET', kReq(ph), 'dl'))
    if NOW >= dl then
      endInFlight(nh, cred, ph, 'expired', 'provider_timeout')
    else
      -- Renews the accounting lease, never past the deadline (spec §7.3).
      redis.call('ZADD', kFl(nh), math.min(NOW + LIM.inFlightTtlMs, dl), ph)
      return out({ k = 'active', rem = dl - NOW })
    end
  end
end
local tid = redis.sha1hex(nh .. '\\n' .. rid)
local t = redis.call('HMGET', kTomb(tid), 'st', 'dl', 'own', 'exp')
if t[1] and tonumber(t[4]) > NOW then
  if not digestEquals(t[3], digest) then return out({ k = 'forbidden' }) end
  if ack then
    redis.call('DEL', kTomb(tid))
    redis.call('ZREM', XTOMB, tid)
  end
  return out({ k = 'tombstone', st = t[1], rem = math.max(0, tonumber(t[2]) - NOW) })
end
if ls then return out({ k = 'completed_unavailable' }) end
return out({ k = 'forbidden' })
`);

/** ARGV: nh, digest ('' = none), operator (1|0). Unregister and its effects (spec §6.4). */
const UNREGISTER = script("Unregister", `
local nh, digest, operator = ARGV[3], ARGV[4], ARGV[5] == '1'
local cred = redis.call('HGET', kNode(nh), 'cred')
if not cred then return out('not_found') end
if not operator and not digestEquals(cred, digest) then return out('forbidden') end
removeNode(nh, 'unregistered')
return out('removed')
`);

export const NODE_SCRIPTS = [REGISTER, CLAIM, RELEASE, SELECT, CONTROL, UNREGISTER];

export async function register(s: RedisState, key: string, capabilities: Capabilities, credentialDigest: string): Promise<RegisterResult> {
  const r = await s.run<{ k: "registered"; issued: boolean } | { k: "nodes_full" }>(
    REGISTER, s.keyDigest(key), key, JSON.stringify(capabilities), credentialDigest, wholeMs(s.limits.leaseMs),
  );
  return r.k === "registered" ? { kind: "registered", credentialIssued: r.issued } : { kind: "nodes_full" };
}

export async function claim(s: RedisState, key: string, capabilities: Capabilities | undefined, holdMs: number): Promise<ClaimResult> {
  const [r, env] = await s.runWith<{ k: "unknown_node" | "empty" } | { k: "work"; rem?: number }>(
    CLAIM, s.keyDigest(key), capabilities ? JSON.stringify(capabilities) : "", Math.max(0, holdMs),
  );
  if (r.k !== "work") return { kind: r.k };
  const envelope = JSON.parse(env!) as Envelope;
  return r.rem === undefined ? { kind: "work", envelope } : { kind: "work", envelope, remainingMs: r.rem };
}

/** The released item is named by its request_id (and client key): objects are not shared across replicas. */
export async function release(s: RedisState, key: string, envelope: Envelope): Promise<void> {
  const rid = envelope.request_id;
  const ph = rid === undefined ? "" : pairHash(envelope.client_public_key, rid);
  await s.run(RELEASE, s.keyDigest(key), ph, rid ?? "", JSON.stringify(envelope), crypto.randomUUID(), envelopeBytes(envelope));
}

type Load = [key: string, caps: string, queueDepth: number, inFlight: number];
const load = ([key, caps, queueDepth, inFlight]: Load): NodeLoad => ({ key, capabilities: JSON.parse(caps) as Capabilities, queueDepth, inFlight });

export async function select(s: RedisState, q: SelectQuery): Promise<SelectResult> {
  const r = await s.run<
    | { k: "no_registered_compute_nodes" | "no_matching_compute_node" }
    | { k: "no_available_capacity"; limited: Load[] }
    | { k: "selected"; chosen: number; eligible: Load[] }
  >(SELECT, q.model, CONTEXT_TIERS[q.tier], q.maxQueueDepth);
  switch (r.k) {
    case "no_registered_compute_nodes":
    case "no_matching_compute_node":
      return { kind: r.k };
    case "no_available_capacity":
      return { kind: "no_available_capacity", capacityLimited: list(r.limited).map(load) };
    case "selected": {
      const eligible = list(r.eligible).map(load);
      return { kind: "selected", node: eligible[r.chosen - 1]!, eligible };
    }
  }
}

export async function control(s: RedisState, key: string, requestId: string, digest: string | undefined, acknowledge: boolean): Promise<ControlResult> {
  const r = await s.run<
    { k: "forbidden" | "completed_unavailable" } | { k: "active"; rem: number } | { k: "tombstone"; st: "cancelled" | "expired"; rem: number }
  >(CONTROL, s.keyDigest(key), requestId, digest ?? "", acknowledge ? 1 : 0);
  switch (r.k) {
    case "active":
      return { kind: "active", remainingMs: r.rem };
    case "tombstone":
      return { kind: "tombstone", status: r.st, remainingMs: r.rem };
    default:
      return { kind: r.k };
  }
}

export async function unregister(s: RedisState, key: string, proof: { credentialDigest: string | undefined } | "operator"): Promise<UnregisterResult> {
  const operator = proof === "operator";
  return s.run<UnregisterResult>(UNREGISTER, s.keyDigest(key), operator ? "" : (proof.credentialDigest ?? ""), operator ? 1 : 0);
}
