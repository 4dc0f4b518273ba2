import { jobBytes, nodeStoredBytesLimit } from "../bytes.ts";
import { topics, type EnqueueResult, type Job, type TouchResult } from "../types.ts";
import type { StoreContext } from "./shared.ts";

/**
 * Nodes and their job queues. A node silent past nodeStaleMs leaves pickNode and gets no new
 * jobs, but its queue stays until each job's own TTL (a busy node finds its work when it polls
 * again); the node record goes once it is stale with nothing queued, as in the memory store.
 */

/** Node keys and the prune every node transition starts with (also used by the sweep). */
export const NODE_LUA = `
local K_NODES = P .. 'nodes'
local K_DUE = P .. 'nodes:due'
local function node_key(id) return P .. 'node:' .. id end
local function q_key(id) return P .. 'q:' .. id end
local function qx_key(id) return P .. 'qx:' .. id end
local K_NODE_BYTES = P .. 'nodes:bytes'

-- A qx:<id> entry is "<expiry>:<bytes>": the job's size lives in the index, so it is released even
-- when the payload expired natively. An entry without ":" (written before sizes were kept) is 0.
local function job_exp(x)
  local c = string.find(x, ':', 1, true)
  return tonumber(c and string.sub(x, 1, c - 1) or x)
end
local function job_size(x)
  local c = string.find(x, ':', 1, true)
  return c and tonumber(string.sub(x, c + 1)) or 0
end

-- Dropping a node releases whatever its queue still held.
local function drop_node(id)
  add_record_bytes(K_NODE_BYTES, id, -record_bytes(K_NODE_BYTES, id))
  redis.call('DEL', node_key(id), q_key(id), qx_key(id))
  redis.call('ZREM', K_NODES, id)
  redis.call('ZREM', K_DUE, id)
end

-- The earliest expiry among the node's queued jobs, or nil when nothing is queued.
local function first_expiry(id)
  local first = nil
  for _, x in ipairs(redis.call('LRANGE', qx_key(id), 0, -1)) do
    local e = job_exp(x)
    if not first or e < first then first = e end
  end
  return first
end

-- Drops the node's expired jobs, and the node itself once it is stale with nothing queued.
-- cnt = {jobs, nodes} counts what expired. Returns the node's last seen time, or false if gone.
local function prune_node(id, stale, cnt)
  local seen = redis.call('ZSCORE', K_NODES, id)
  if not seen then
    drop_node(id)
    return false
  end
  seen = tonumber(seen)
  local due = redis.call('ZSCORE', K_DUE, id)
  -- Not due: no queued job has expired and the node is not (stale and empty).
  if due and tonumber(due) > NOW then return seen end
  local xs = redis.call('LRANGE', qx_key(id), 0, -1)
  local dead, lead, nextExp, freed = 0, 0, nil, 0
  for i, x in ipairs(xs) do
    local e = job_exp(x)
    if e <= NOW then
      dead = dead + 1
      freed = freed + job_size(x)
      if lead == i - 1 then lead = i end
    elseif not nextExp or e < nextExp then
      nextExp = e
    end
  end
  if dead > 0 then
    cnt[1] = cnt[1] + dead
    add_record_bytes(K_NODE_BYTES, id, -freed)
    if lead == dead then
      redis.call('LTRIM', q_key(id), dead, -1)
      redis.call('LTRIM', qx_key(id), dead, -1)
    else
      -- Only a clock that stepped back puts an expired job behind a live one.
      local payloads = redis.call('LLEN', q_key(id)) == #xs
      for i, x in ipairs(xs) do
        if job_exp(x) <= NOW then
          if payloads then redis.call('LSET', q_key(id), i - 1, '~') end
          redis.call('LSET', qx_key(id), i - 1, '~')
        end
      end
      redis.call('LREM', q_key(id), 0, '~')
      redis.call('LREM', qx_key(id), 0, '~')
    end
  end
  if not nextExp and NOW - seen > stale then
    drop_node(id)
    cnt[2] = cnt[2] + 1
    return false
  end
  redis.call('ZADD', K_DUE, nextExp or (seen + stale + 1), id)
  return seen
end

-- Prunes at most batch nodes that are due.
local function reap_nodes(stale, batch, cnt)
  local ids = redis.call('ZRANGEBYSCORE', K_DUE, '-inf', NOW, 'LIMIT', 0, batch)
  for _, id in ipairs(ids) do prune_node(id, stale, cnt) end
end

-- Native TTLs: the node's records live at least until it is stale and its last job expired.
-- qx:<id> has none: it is part of the expiry index (at most maxQueueDepth entries, dropped with
-- its node), so jobs whose payloads the datastore expired are still counted, and their bytes
-- released, once by a prune.
local function keep_node(id, seen, stale, lastExp)
  local last = seen + stale + 1
  if lastExp and lastExp > last then last = lastExp end
  local ms = last - NOW + GRACE
  extend(node_key(id), ms)
  extend(q_key(id), ms)
end
`;

// KEYS: nodes, nodes:due. ARGV: now, P, id, key, nodeStaleMs, maxNodes
// "full" is final only after a sweep made no room (the store sweeps and asks again, as memory does).
const TOUCH_LUA = `${NODE_LUA}
local id, key, stale = ARGV[3], ARGV[4], tonumber(ARGV[5])
local cnt = {0, 0}
if not prune_node(id, stale, cnt) then
  if redis.call('ZCARD', K_NODES) >= tonumber(ARGV[6]) then return {cnt[1], cnt[2], 'full'} end
  redis.call('HSET', node_key(id), 'key', key)
end
redis.call('ZADD', K_NODES, NOW, id)
if redis.call('LLEN', qx_key(id)) == 0 then redis.call('ZADD', K_DUE, NOW + stale + 1, id) end
keep_node(id, NOW, stale, nil)
return {cnt[1], cnt[2], 'ok'}
`;

// KEYS: nodes, nodes:due. ARGV: now, P, nodeStaleMs, random in [0, 1), batch
// Returns {expired jobs, expired nodes, key?}. Prunes the nodes that are due first (at most batch),
// as the memory store's pickNode prunes every node. Uniform among fresh nodes: count them, then
// one ranged read at a random offset (at most maxNodes entries).
const PICK_LUA = `${NODE_LUA}
local stale = tonumber(ARGV[3])
local cnt = {0, 0}
reap_nodes(stale, tonumber(ARGV[5]), cnt)
local min = NOW - stale
local n = redis.call('ZCOUNT', K_NODES, min, '+inf')
if n == 0 then return cnt end
local r = math.floor(tonumber(ARGV[4]) * n)
if r >= n then r = n - 1 end
local id = redis.call('ZRANGEBYSCORE', K_NODES, min, '+inf', 'LIMIT', r, 1)[1]
if id then cnt[3] = redis.call('HGET', node_key(id), 'key') end
return cnt
`;

// KEYS: nodes, nodes:due. ARGV: now, P, id, job JSON, nodeStaleMs, maxQueueDepth, jobTtlMs,
// job bytes, maxStoredBytes, the node's share of it, wake channel. "storage_full" is final only
// after a sweep made no room (the store sweeps and asks again, as memory does). A queued job wakes
// the node's /sink held on any replica, if a look found the queue empty recently (wj:<id>).
const ENQUEUE_LUA = `${NODE_LUA}
local id, stale, size = ARGV[3], tonumber(ARGV[5]), tonumber(ARGV[8])
local cnt = {0, 0}
local seen = prune_node(id, stale, cnt)
if not seen or NOW - seen > stale then return {cnt[1], cnt[2], 'unknown_node'} end
local len = redis.call('LLEN', qx_key(id))
if len >= tonumber(ARGV[6]) then return {cnt[1], cnt[2], 'queue_full'} end
if record_bytes(K_NODE_BYTES, id) + size > tonumber(ARGV[10]) then return {cnt[1], cnt[2], 'node_storage_full'} end
if not fits_bytes(size, tonumber(ARGV[9])) then return {cnt[1], cnt[2], 'storage_full'} end
local exp = NOW + tonumber(ARGV[7])
redis.call('RPUSH', q_key(id), ARGV[4])
redis.call('RPUSH', qx_key(id), exp .. ':' .. size)
add_record_bytes(K_NODE_BYTES, id, size)
local due = redis.call('ZSCORE', K_DUE, id)
if len == 0 or not due or exp < tonumber(due) then redis.call('ZADD', K_DUE, exp, id) end
keep_node(id, seen, stale, exp)
wake_waiter(P .. 'wj:' .. id, ARGV[11])
return {cnt[1], cnt[2], 'queued'}
`;

// KEYS: nodes, nodes:due. ARGV: now, P, id, nodeStaleMs, max, hold, wake digest
// Returns {expired jobs, expired nodes, job JSON...}, oldest first; each job leaves exactly once.
// An empty queue marks the node for the hold (wj:<id>): its /sink may now wait for a job.
const TAKE_LUA = `${NODE_LUA}
local id, stale = ARGV[3], tonumber(ARGV[4])
local cnt = {0, 0}
local seen = prune_node(id, stale, cnt)
local out = {cnt[1], cnt[2]}
local max = math.floor(tonumber(ARGV[5]))
if not seen or max < 1 then return out end
local jobs = redis.call('LPOP', q_key(id), max)
if not jobs then
  mark_waiter(P .. 'wj:' .. id, tonumber(ARGV[6]), ARGV[7])
  return out
end
local freed = 0
for _, x in ipairs(redis.call('LPOP', qx_key(id), #jobs) or {}) do freed = freed + job_size(x) end
add_record_bytes(K_NODE_BYTES, id, -freed)
redis.call('ZADD', K_DUE, first_expiry(id) or (seen + stale + 1), id)
for _, j in ipairs(jobs) do out[#out + 1] = j end
return out
`;

/**
 * A node this process touched successfully this recently is not touched again: /sink touches
 * before and after its hold, and a busy node's next /sink follows at once, so most touches would
 * repeat one made a moment ago. Its last-seen time lags by at most this much, against a staleness
 * of RELAY_NODE_STALE_MS (at least 1 s); and a node this fresh cannot have been pruned (only
 * stale nodes are). With an injected clock, only touches at the same instant are shared.
 */
export const TOUCH_REUSE_MS = 100;
/** Nodes remembered as touched; past this many the memory starts over (bounds it under a crowd). */
const TOUCHED_ENTRIES = 4_096;

export function createNodeOps(ctx: StoreContext) {
  const touch = ctx.script("TouchNode", 2, TOUCH_LUA);
  const pick = ctx.script("PickNode", 2, PICK_LUA);
  const enqueue = ctx.script("EnqueueJob", 2, ENQUEUE_LUA);
  const take = ctx.script("TakeJobs", 2, TAKE_LUA);
  const nodes = ctx.key("nodes");
  const due = ctx.key("nodes:due");
  const { limits } = ctx;

  /** Every node script replies {expired jobs, expired nodes, result...}: count, then the result. */
  const counted = (reply: unknown): unknown[] => {
    const [jobs, gone, ...result] = reply as [number, number, ...unknown[]];
    ctx.expired("job", jobs);
    ctx.expired("node", gone);
    return result;
  };

  /** Node key -> when this process last touched it with "ok" (ctx.now()). */
  const touched = new Map<string, number>();

  return {
    touchNode: async (key: string): Promise<TouchResult> => {
      const at = touched.get(key);
      if (at !== undefined && ctx.now() - at < TOUCH_REUSE_MS) return "ok";
      return ctx.run(async () => {
        const now = ctx.now();
        const reply = await touch([nodes, due], [...ctx.base(), ctx.keyDigest(key), key, limits.nodeStaleMs, limits.maxNodes]);
        const result = counted(reply)[0] as TouchResult;
        if (result === "ok") {
          if (touched.size >= TOUCHED_ENTRIES) touched.clear();
          touched.set(key, now);
        }
        return result;
      });
    },

    pickNode: (): Promise<string | undefined> =>
      ctx.run(async () => {
        const reply = await pick([nodes, due], [...ctx.base(), limits.nodeStaleMs, Math.random(), ctx.sweepBatch]);
        return (counted(reply)[0] as string | null | undefined) ?? undefined;
      }),

    enqueueJob: (nodeKey: string, job: Job): Promise<EnqueueResult> =>
      ctx.run(async () => {
        const reply = await enqueue(
          [nodes, due],
          [
            ...ctx.base(),
            ctx.keyDigest(nodeKey),
            JSON.stringify(job),
            limits.nodeStaleMs,
            limits.maxQueueDepth,
            limits.jobTtlMs,
            jobBytes(job),
            limits.maxStoredBytes,
            nodeStoredBytesLimit(limits.maxStoredBytes),
            ctx.wakeChannel,
          ],
        );
        return counted(reply)[0] as EnqueueResult;
      }),

    takeJobs: (nodeKey: string, max: number, holdMs?: number): Promise<Job[]> =>
      ctx.run(async () => {
        const reply = await take(
          [nodes, due],
          [...ctx.base(), ctx.keyDigest(nodeKey), limits.nodeStaleMs, max, ...ctx.waiter(topics.job(nodeKey), holdMs)],
        );
        return (counted(reply) as string[]).map((j) => JSON.parse(j) as Job);
      }),
  };
}
