import type { Answer, StoreResult } from "../types.ts";
import { hashKey, type StoreContext } from "./shared.ts";

/** Answers waiting for their client: one per client key, delivered once, expiring after answerTtlMs. */

export const ANSWER_LUA = `
local K_ANSWERS = P .. 'answers'
local function answer_key(id) return P .. 'answer:' .. id end

-- Drops at most batch expired answers (expired once expiry < now); returns how many.
local function reap_answers(batch)
  local ids = redis.call('ZRANGEBYSCORE', K_ANSWERS, '-inf', '(' .. NOW, 'LIMIT', 0, batch)
  for _, id in ipairs(ids) do
    redis.call('DEL', answer_key(id))
    redis.call('ZREM', K_ANSWERS, id)
  end
  return #ids
end
`;

// KEYS: answers. ARGV: now, P, id, key, answer JSON, maxAnswers, answerTtlMs
// Replacing an uncollected answer of the same client is not growth. "full" is final only after
// a sweep made no room (the store sweeps and asks again, as memory does).
const PUT_LUA = `${ANSWER_LUA}
local id, ttl = ARGV[3], tonumber(ARGV[7])
if not redis.call('ZSCORE', K_ANSWERS, id) and redis.call('ZCARD', K_ANSWERS) >= tonumber(ARGV[6]) then return 'full' end
redis.call('HSET', answer_key(id), 'key', ARGV[4], 'answer', ARGV[5])
redis.call('PEXPIRE', answer_key(id), ttl + 1 + GRACE)
redis.call('ZADD', K_ANSWERS, NOW + ttl, id)
return 'stored'
`;

// KEYS: answers. ARGV: now, P, id, key
// Returns {expired, answer JSON?}: the answer leaves exactly once, also when it had expired.
const TAKE_LUA = `${ANSWER_LUA}
local id = ARGV[3]
local exp = redis.call('ZSCORE', K_ANSWERS, id)
if not exp then return {0} end
local stored = redis.call('HMGET', answer_key(id), 'key', 'answer')
redis.call('DEL', answer_key(id))
redis.call('ZREM', K_ANSWERS, id)
if tonumber(exp) < NOW or stored[1] ~= ARGV[4] or not stored[2] then return {1} end
return {0, stored[2]}
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
          [...ctx.base(), hashKey(clientKey), clientKey, JSON.stringify(answer), limits.maxAnswers, limits.answerTtlMs],
        )) as StoreResult;
      }),

    takeAnswer: (clientKey: string): Promise<Answer | undefined> =>
      ctx.run(async () => {
        const [expired, answer] = (await take([answers], [...ctx.base(), hashKey(clientKey), clientKey])) as [number, string?];
        ctx.expired("answer", expired);
        return answer === undefined ? undefined : (JSON.parse(answer) as Answer);
      }),
  };
}
