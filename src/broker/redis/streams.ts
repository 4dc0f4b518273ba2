import { chunkBytes, chunkJson } from "../bytes.ts";
import { topics, type PushResult, type StreamDrain } from "../types.ts";
import { hashKey, type StoreContext } from "./shared.ts";

/**
 * Stream sessions: chunks a node pushes for a client, drained in order; a session idle (neither
 * pushed to nor drained) past streamTtlMs expires, a drain that returns the final chunk ends it,
 * and a newer session for the same client replaces the older. Chunks are JSON-encoded values.
 */

export const STREAM_LUA = `
local K_STREAMS = P .. 'streams'
local function session_key(sh) return P .. 'session:' .. sh end
local function chunks_key(sh) return P .. 'chunks:' .. sh end
local function client_key(ch) return P .. 'client:' .. ch end
local K_STREAM_BYTES = P .. 'streams:bytes'

-- Deletes a session's undrained chunks, releasing their bytes.
local function drop_chunks(sh)
  redis.call('DEL', chunks_key(sh))
  add_record_bytes(K_STREAM_BYTES, sh, -record_bytes(K_STREAM_BYTES, sh))
end

local function end_session(sh)
  local ch = redis.call('HGET', session_key(sh), 'ch')
  drop_chunks(sh)
  redis.call('DEL', session_key(sh))
  redis.call('ZREM', K_STREAMS, sh)
  if ch and redis.call('HGET', client_key(ch), 'sh') == sh then redis.call('DEL', client_key(ch)) end
end

-- Whether the session exists and is not idle past ttl; an idle one is ended and counted in cnt[1].
local function live_session(sh, ttl, cnt)
  local touched = redis.call('ZSCORE', K_STREAMS, sh)
  if not touched then return false end
  if NOW - tonumber(touched) > ttl then
    end_session(sh)
    cnt[1] = cnt[1] + 1
    return false
  end
  return true
end

-- Ends at most batch idle sessions.
local function reap_streams(ttl, batch, cnt)
  local ids = redis.call('ZRANGEBYSCORE', K_STREAMS, '-inf', '(' .. (NOW - ttl), 'LIMIT', 0, batch)
  for _, sh in ipairs(ids) do
    end_session(sh)
    cnt[1] = cnt[1] + 1
  end
end

local function keep_session(sh, ch, ttl)
  local ms = ttl + 1 + GRACE
  redis.call('PEXPIRE', session_key(sh), ms)
  redis.call('PEXPIRE', chunks_key(sh), ms)
  if ch then extend(client_key(ch), ms) end
end
`;

// KEYS: streams. ARGV: now, P, maxStreamSessions. 1 if another session fits; when not, the
// store sweeps and asks again, as memory does.
const CAN_OPEN_LUA = `${STREAM_LUA}
if redis.call('ZCARD', K_STREAMS) < tonumber(ARGV[3]) then return 1 end
return 0
`;

// KEYS: streams. ARGV: now, P, ch, client key, sh, session id, streamTtlMs, wake channel. The new
// session wakes the client's /stream/retrieve held on any replica, if a drain found nothing
// recently (ws:<ch>).
const OPEN_LUA = `${STREAM_LUA}
local ch, sh = ARGV[3], ARGV[5]
local previous = redis.call('HGET', client_key(ch), 'sh')
if previous then
  drop_chunks(previous)
  redis.call('DEL', session_key(previous))
  redis.call('ZREM', K_STREAMS, previous)
end
drop_chunks(sh)
redis.call('HSET', session_key(sh), 'sid', ARGV[6], 'client', ARGV[4], 'ch', ch, 'final', '0')
redis.call('HSET', client_key(ch), 'key', ARGV[4], 'sh', sh)
redis.call('ZADD', K_STREAMS, NOW, sh)
keep_session(sh, ch, tonumber(ARGV[7]))
wake_waiter(P .. 'ws:' .. ch, ARGV[8])
return 1
`;

// KEYS: streams. ARGV: now, P, sh, session id, chunk JSON, final (0/1), streamTtlMs, maxStreamChunks,
// chunk bytes, maxStoredBytes, wake channel. Returns {result, expired, client key?}; "storage_full"
// is final only after a sweep made no room (the store sweeps and asks again, as memory does). A
// stored chunk wakes the client's held /stream/retrieve as a new session does (ws:<ch>).
const PUSH_LUA = `${STREAM_LUA}
local sh, ttl = ARGV[3], tonumber(ARGV[7])
local cnt = {0}
if not live_session(sh, ttl, cnt) then return {'unknown_session', cnt[1]} end
local s = redis.call('HMGET', session_key(sh), 'sid', 'final', 'client', 'ch')
if s[1] ~= ARGV[4] or not s[3] then return {'unknown_session', cnt[1]} end
if s[2] == '1' then return {'already_final', cnt[1]} end
if redis.call('LLEN', chunks_key(sh)) >= tonumber(ARGV[8]) then return {'session_full', cnt[1]} end
local size = tonumber(ARGV[9])
if not fits_bytes(size, tonumber(ARGV[10])) then return {'storage_full', cnt[1]} end
redis.call('RPUSH', chunks_key(sh), ARGV[5])
add_record_bytes(K_STREAM_BYTES, sh, size)
if ARGV[6] == '1' then redis.call('HSET', session_key(sh), 'final', '1') end
redis.call('ZADD', K_STREAMS, NOW, sh)
keep_session(sh, s[4], ttl)
wake_waiter(P .. 'ws:' .. s[4], ARGV[11])
return {'stored', cnt[1], s[3]}
`;

// KEYS: streams. ARGV: now, P, ch, client key, streamTtlMs, hold, wake digest
// Returns {expired} or {expired, session id, final (0/1), chunk JSON...}; each chunk leaves once.
// Finding no session, or no chunk of an unfinished one, marks the client for the hold (ws:<ch>):
// its /stream/retrieve may now wait for a session or a chunk.
const DRAIN_LUA = `${STREAM_LUA}
local ch, ttl = ARGV[3], tonumber(ARGV[5])
local cnt = {0}
local function nothing()
  mark_waiter(P .. 'ws:' .. ch, tonumber(ARGV[6]), ARGV[7])
  return {cnt[1]}
end
local current = redis.call('HMGET', client_key(ch), 'key', 'sh')
local sh = current[2]
if not sh or current[1] ~= ARGV[4] then return nothing() end
if not live_session(sh, ttl, cnt) then
  -- An idle session was ended above (with its pointer); a pointer to a vanished session goes too.
  if redis.call('HGET', client_key(ch), 'sh') == sh then redis.call('DEL', client_key(ch)) end
  return nothing()
end
local s = redis.call('HMGET', session_key(sh), 'sid', 'final')
if not s[1] then
  end_session(sh)
  redis.call('DEL', client_key(ch))
  return nothing()
end
local chunks = redis.call('LRANGE', chunks_key(sh), 0, -1)
if #chunks == 0 and s[2] ~= '1' then mark_waiter(P .. 'ws:' .. ch, tonumber(ARGV[6]), ARGV[7]) end
drop_chunks(sh)
local out = {cnt[1], s[1], s[2] == '1' and 1 or 0}
for _, c in ipairs(chunks) do out[#out + 1] = c end
if s[2] == '1' then
  end_session(sh)
else
  redis.call('ZADD', K_STREAMS, NOW, sh)
  keep_session(sh, ch, ttl)
end
return out
`;

export function createStreamOps(ctx: StoreContext) {
  const canOpen = ctx.script("CanOpenStream", 1, CAN_OPEN_LUA);
  const open = ctx.script("OpenStream", 1, OPEN_LUA);
  const push = ctx.script("PushChunk", 1, PUSH_LUA);
  const drain = ctx.script("DrainStream", 1, DRAIN_LUA);
  const streams = ctx.key("streams");
  const { limits } = ctx;

  return {
    canOpenStream: (): Promise<boolean> =>
      ctx.run(async () => (await canOpen([streams], [...ctx.base(), limits.maxStreamSessions])) === 1),

    openStream: (clientKey: string, sessionId: string): Promise<void> =>
      ctx.run(async () => {
        await open(
          [streams],
          [...ctx.base(), ctx.keyDigest(clientKey), clientKey, hashKey(sessionId), sessionId, limits.streamTtlMs, ctx.wakeChannel],
        );
      }),

    pushChunk: (sessionId: string, chunk: unknown, final: boolean): Promise<PushResult> =>
      ctx.run(async () => {
        const json = chunkJson(chunk);
        const [kind, expired, clientKey] = (await push(
          [streams],
          [
            ...ctx.base(),
            hashKey(sessionId),
            sessionId,
            json,
            final ? 1 : 0,
            limits.streamTtlMs,
            limits.maxStreamChunks,
            chunkBytes(json),
            limits.maxStoredBytes,
            ctx.wakeChannel,
          ],
        )) as [Exclude<PushResult["kind"], "stored"> | "stored", number, string?];
        ctx.expired("stream", expired);
        return kind === "stored" ? { kind, clientKey: clientKey! } : { kind };
      }),

    drainStream: (clientKey: string, holdMs?: number): Promise<StreamDrain | undefined> =>
      ctx.run(async () => {
        const [expired, sessionId, final, ...chunks] = (await drain(
          [streams],
          [...ctx.base(), ctx.keyDigest(clientKey), clientKey, limits.streamTtlMs, ...ctx.waiter(topics.stream(clientKey), holdMs)],
        )) as [number, string?, number?, ...string[]];
        ctx.expired("stream", expired);
        if (sessionId === undefined) return undefined;
        return { sessionId, chunks: chunks.map((c) => JSON.parse(c) as unknown), final: final === 1 };
      }),
  };
}
