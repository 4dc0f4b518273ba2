import type { StoreStats } from "../types.ts";
import { ANSWER_LUA } from "./answers.ts";
import { NODE_LUA } from "./nodes.ts";
import type { StoreContext } from "./shared.ts";
import { STREAM_LUA } from "./streams.ts";

/**
 * sweep() and stats(). Every replica sweeps every second: each sweep drains at most `batch` due
 * entries of each expiry index, and what one replica removed another does not count again.
 */

// KEYS: nodes, nodes:due, answers, streams. ARGV: now, P, nodeStaleMs, streamTtlMs, batch
// Returns {expired jobs, expired nodes, expired answers, expired streams}.
const SWEEP_LUA = `${NODE_LUA}${ANSWER_LUA}${STREAM_LUA}
local batch = tonumber(ARGV[5])
local nodes = {0, 0}
reap_nodes(tonumber(ARGV[3]), batch, nodes)
local answers = reap_answers(batch)
local streams = {0}
reap_streams(tonumber(ARGV[4]), batch, streams)
return {nodes[1], nodes[2], answers, streams[1]}
`;

// KEYS: nodes, nodes:due, answers, streams. ARGV: now, P, nodeStaleMs
// Read-only. Visits every node (at most maxNodes); a queue whose earliest expiry is still ahead is
// counted by its length, others job by job, so jobs expired but not yet swept never count. The
// stored bytes are the budget's counter: they include what expired and was not yet swept.
const STATS_LUA = `${NODE_LUA}
local fresh = redis.call('ZCOUNT', K_NODES, NOW - tonumber(ARGV[3]), '+inf')
local queued, deepest = 0, 0
for _, id in ipairs(redis.call('ZRANGE', K_NODES, 0, -1)) do
  local len = redis.call('LLEN', qx_key(id))
  if len > 0 then
    local due = redis.call('ZSCORE', K_DUE, id)
    local waiting = len
    if not due or tonumber(due) <= NOW then
      waiting = 0
      for _, x in ipairs(redis.call('LRANGE', qx_key(id), 0, -1)) do
        if job_exp(x) > NOW then waiting = waiting + 1 end
      end
    end
    queued = queued + waiting
    if waiting > deepest then deepest = waiting end
  end
end
return {fresh, queued, deepest, redis.call('ZCARD', P .. 'answers'), redis.call('ZCARD', P .. 'streams'), tonumber(redis.call('GET', K_BYTES) or 0)}
`;

export function createHousekeeping(ctx: StoreContext) {
  const sweep = ctx.script("Sweep", 4, SWEEP_LUA);
  const stats = ctx.script("Stats", 4, STATS_LUA);
  const keys = ["nodes", "nodes:due", "answers", "streams"].map(ctx.key);
  const { limits } = ctx;

  return {
    sweep: (): Promise<void> =>
      ctx.run(async () => {
        const [jobs, nodes, answers, streams] = (await sweep(keys, [
          ...ctx.base(),
          limits.nodeStaleMs,
          limits.streamTtlMs,
          ctx.sweepBatch,
        ])) as number[];
        ctx.expired("job", jobs);
        ctx.expired("node", nodes);
        ctx.expired("answer", answers);
        ctx.expired("stream", streams);
      }),

    stats: (): Promise<StoreStats> =>
      ctx.run(async () => {
        const [nodes, queuedJobs, maxQueueDepth, answers, streams, storedBytes] = (await stats(keys, [...ctx.base(), limits.nodeStaleMs])) as number[];
        return {
          nodes: nodes!, queuedJobs: queuedJobs!, maxQueueDepth: maxQueueDepth!, answers: answers!, streams: streams!, storedBytes: storedBytes!,
        };
      }),
  };
}
