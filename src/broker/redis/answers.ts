import { answerBytes } from "../bytes.ts";
import { topics, type Answer, type StoreResult } from "../types.ts";
import type { StoreContext } from "./shared.ts";

/** Answers waiting for their client: one per client key, delivered once, expiring after answerTtlMs. */

export const ANSWER_LUA = `
local K_ANSWERS = P .. 'answers'
local K_ANSWER_BYTES = P .. 'answers:bytes'
local function answer_key(id) return P .. 'answer:' .. id end

-- Removes an answer with its index entry, releasing its bytes.
local function drop_answer(id)
  redis.call('DEL', answer_key(id))
  redis.call('ZREM', K_ANSWERS, id)
  add_record_bytes(K_ANSWER_BYTES, id, -record_bytes(K_ANSWER_BYTES, id))
end

-- Drops at most batch expired answers (expired once expiry < now); returns how many.
local function reap_answers(batch)
  local ids = redis.call('ZRANGEBYSCORE', K_ANSWERS, '-inf', '(' .. NOW, 'LIMIT', 0, batch)
  for _, id in ipairs(ids) do drop_answer(id) end
  return #ids
end
`;

// KEYS: answers. ARGV: now, P, id, key, answer JSON, maxAnswers, answerTtlMs, answer bytes,
// maxStoredBytes, wake channel. A stored answer wakes the client's /retrieve held on any replica,
// if a look found nothing recently (wa:<id>). Replacing an uncollected answer of the same client is not growth (only the
// difference in bytes counts). "full" and "storage_full" are final only after a sweep made no room
// (the store sweeps and asks again, as memory does).
const PUT_LUA = `${ANSWER_LUA}
local id, ttl, size = ARGV[3], tonumber(ARGV[7]), tonumber(ARGV[8])
local present = redis.call('ZSCORE', K_ANSWERS, id)
if not present and redis.call('ZCARD', K_ANSWERS) >= tonumber(ARGV[6]) then return 'full' end
local delta = size - record_bytes(K_ANSWER_BYTES, id)
if not fits_bytes(delta, tonumber(ARGV[9])) then return 'storage_full' end
add_record_bytes(K_ANSWER_BYTES, id, delta)
redis.call('HSET', answer_key(id), 'key', ARGV[4], 'answer', ARGV[5])
redis.call('PEXPIRE', answer_key(id), ttl + 1 + GRACE)
redis.call('ZADD', K_ANSWERS, NOW + ttl, id)
wake_waiter(P .. 'wa:' .. id, ARGV[10])
return 'stored'
`;

// KEYS: answers. ARGV: now, P, id, key, hold, wake digest
// Returns {expired, answer JSON?}: the answer leaves exactly once, also when it had expired.
// Finding none marks the client for the hold (wa:<id>): its /retrieve may now wait for one.
const TAKE_LUA = `${ANSWER_LUA}
local id = ARGV[3]
local exp = redis.call('ZSCORE', K_ANSWERS, id)
local stored = exp and redis.call('HMGET', answer_key(id), 'key', 'answer')
if exp then drop_answer(id) end
if exp and tonumber(exp) >= NOW and stored[1] == ARGV[4] and stored[2] then return {0, stored[2]} end
mark_waiter(P .. 'wa:' .. id, tonumber(ARGV[5]), ARGV[6])
return {exp and 1 or 0}
`;

export function createAnswerOps(ctx: StoreContext) {
  const put = ctx.script("PutAnswer", 1, PUT_LUA);
  const take = ctx.script("TakeAnswer", 1, TAKE_LUA);
  const answers = ctx.key("answers");
  const { limits } = ctx;

  return {
    putAnswer: (clientKey: string, answer: Answer): Promise<StoreResult> =>
      ctx.run(async () => {
        return (await put(
          [answers],
          [
            ...ctx.base(),
            ctx.keyDigest(clientKey),
            clientKey,
            JSON.stringify(answer),
            limits.maxAnswers,
            limits.answerTtlMs,
            answerBytes(answer),
            limits.maxStoredBytes,
            ctx.wakeChannel,
          ],
        )) as StoreResult;
      }),

    takeAnswer: (clientKey: string, holdMs?: number): Promise<Answer | undefined> =>
      ctx.run(async () => {
        const [expired, answer] = (await take(
          [answers],
          [...ctx.base(), ctx.keyDigest(clientKey), clientKey, ...ctx.waiter(topics.answer(clientKey), holdMs)],
        )) as [number, string?];
        ctx.expired("answer", expired);
        return answer === undefined ? undefined : (JSON.parse(answer) as Answer);
      }),
  };
}
