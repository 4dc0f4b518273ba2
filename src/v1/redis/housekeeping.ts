import type { Capabilities, NodeView, V1Stats } from "../store.ts";
import { list, script, type RedisState } from "./state.ts";

/** Expiry, eviction and the read-only views (memory/index.ts sweep, stats, diagnostics, close). */

/**
 * Records handled per expiry index by one script run. Every replica sweeps every second, so a run
 * must be short (a script blocks the datastore) and idempotent: it takes only what is due now, and
 * whatever it leaves (a backlog larger than a batch) the next run or another replica takes.
 */
export const SWEEP_BATCH = 256;
/** Runs per sweep() while a batch came back full. */
const SWEEP_MAX_RUNS = 8;

/** ARGV: batch. Housekeeping in upstream's order (spec §7.7), over the due part of each index. */
const SWEEP = script("Sweep", `
local B = tonumber(ARGV[3])
local more = false
local function due(index)
  local ids = redis.call('ZRANGEBYSCORE', index, '-inf', num(NOW), 'LIMIT', 0, B)
  if #ids == B then more = true end
  return ids
end
for _, m in ipairs(due(XTERM)) do
  redis.call('DEL', kTerm(recPair(m)))
  redis.call('ZREM', XTERM, m)
end
for _, m in ipairs(due(XOUT)) do
  redis.call('DEL', kOut(recPair(m)))
  redis.call('ZREM', XOUT, m)
end
for _, tid in ipairs(due(XTOMB)) do
  redis.call('DEL', kTomb(tid))
  redis.call('ZREM', XTOMB, tid)
end
for _, ph in ipairs(due(XDL)) do
  local st = redis.call('HGET', kReq(ph), 'st')
  if st then expirePending(ph, st == 'q' and 'pending_request_ttl_exceeded' or 'provider_timeout')
  else redis.call('ZREM', XDL, ph) end
end
local untracked = 0
for _, id in ipairs(due(XUNT)) do
  local nh = redis.call('HGET', kUreq(id), 'node')
  if nh then untracked = untracked + redis.call('LREM', kQ(nh), 1, 'u:' .. id) end
  dropUntracked(id)
end
if untracked > 0 then ev('dropped:untracked_request:' .. untracked) end
local answers = 0
for _, m in ipairs(due(XANS)) do
  -- Members are ch:aid, ch being 64 hex digits.
  dropAnswer(string.sub(m, 1, 64), string.sub(m, 66))
  redis.call('ZREM', XANS, m)
  answers = answers + 1
end
if answers > 0 then ev('dropped:answer:' .. answers) end
for _, nh in ipairs(due(XEVICT)) do
  local ls, lease, held = nodeTimes(nh)
  if not ls then
    redis.call('ZREM', XEVICT, nh)
  elseif isEvictable(nh, ls, lease, held) then
    removeNode(nh, 'stale_lease')
  else
    -- Not yet: due again when it is stale and its last accounting lease has lapsed (spec §7.1, §7.3).
    local last = redis.call('ZRANGE', kFl(nh), -1, -1, 'WITHSCORES')[2]
    redis.call('ZADD', XEVICT, math.max(staleAt(ls, lease, held), math.ceil(tonumber(last or 0))), nh)
  end
end
-- No live request, so nothing is charged to any address: whatever a counter still holds is drift,
-- left by a replica of an earlier version (which never released per-address bytes) during a
-- rolling upgrade. It heals at the first moment the relay is idle.
if redis.call('ZCARD', XDL) + redis.call('ZCARD', XUNT) == 0 then redis.call('DEL', KCB) end
return out(more)
`);

/** Node views in registration order: key, caps, queue depth, live in flight, ms since seen, lease ms. */
const DIAGNOSTICS = script("Diagnostics", `
local views = {}
for _, nh in ipairs(redis.call('ZRANGE', KN, 0, -1)) do
  local f = redis.call('HMGET', kNode(nh), 'key', 'caps', 'ls', 'lease')
  if f[1] then
    views[#views + 1] = { f[1], f[2], redis.call('LLEN', kQ(nh)), liveInFlight(nh), NOW - tonumber(f[3]), tonumber(f[4]) }
  end
end
return out(views)
`);

/** Totals over every node, ages in ms (memory/index.ts stats). */
const STATS = script("Stats", `
local s = { nodes = 0, healthy = 0, queued = 0, oldestQueued = 0, inFlight = 0, oldestInFlight = 0, oldestLease = 0 }
for _, nh in ipairs(redis.call('ZRANGE', KN, 0, -1)) do
  local ls, lease, held = nodeTimes(nh)
  if ls then
    s.nodes = s.nodes + 1
    if not isStale(ls, lease, held) then s.healthy = s.healthy + 1 end
    s.queued = s.queued + redis.call('LLEN', kQ(nh))
    s.oldestLease = math.max(s.oldestLease, NOW - ls)
    local head = redis.call('LINDEX', kQ(nh), 0)
    if head then
      local at = isUntracked(head) and redis.call('HGET', kUreq(string.sub(head, 3)), 'enq') or redis.call('HGET', kReq(head), 'adm')
      if at then s.oldestQueued = math.max(s.oldestQueued, NOW - tonumber(at)) end
    end
    for _, ph in ipairs(redis.call('ZRANGE', kFl(nh), 0, -1)) do
      s.inFlight = s.inFlight + 1
      local started = redis.call('HGET', kReq(ph), 'started')
      if started then s.oldestInFlight = math.max(s.oldestInFlight, NOW - tonumber(started)) end
    end
  end
end
s.answers = redis.call('ZCARD', XANS)
s.bytes = tonumber(redis.call('GET', KBYTES) or 0)
s.clients = redis.call('HLEN', KCB)
return out(s)
`);

export const HOUSEKEEPING_SCRIPTS = [SWEEP, DIAGNOSTICS, STATS];

export async function sweep(s: RedisState): Promise<void> {
  for (let run = 0; run < SWEEP_MAX_RUNS; run++) {
    if (!(await s.run<boolean>(SWEEP, SWEEP_BATCH))) return;
  }
}

type View = [key: string, caps: string, queueDepth: number, inFlight: number, ageMs: number, leaseMs: number];

export async function diagnostics(s: RedisState): Promise<NodeView[]> {
  const views = list(await s.run<View[] | Record<string, never>>(DIAGNOSTICS));
  return views.map(([key, caps, queueDepth, inFlight, ageMs, leaseMs]) => ({
    key,
    capabilities: JSON.parse(caps) as Capabilities,
    queueDepth,
    inFlight,
    ageSeconds: ageMs / 1000,
    leaseSeconds: leaseMs / 1000,
  }));
}

export async function stats(s: RedisState): Promise<V1Stats> {
  const r = await s.run<{ nodes: number; healthy: number; queued: number; oldestQueued: number; inFlight: number; oldestInFlight: number; oldestLease: number; answers: number; bytes: number; clients: number }>(STATS);
  return {
    nodes: r.nodes,
    healthyNodes: r.healthy,
    queued: r.queued,
    oldestQueuedAgeSeconds: r.oldestQueued / 1000,
    inFlight: r.inFlight,
    oldestInFlightAgeSeconds: r.oldestInFlight / 1000,
    oldestLeaseAgeSeconds: r.oldestLease / 1000,
    answers: r.answers,
    storedBytes: r.bytes,
    clientsHoldingBytes: r.clients,
  };
}

/**
 * The state is shared and outlives this process: nothing is discarded at stop. Reports what is
 * still held, like the memory store; the connection belongs to whoever opened it.
 */
export async function close(s: RedisState): Promise<V1Stats> {
  return stats(s);
}
