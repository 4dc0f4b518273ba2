import { answerBytes } from "../bytes.ts";
import type { Answer, StoreResult } from "../types.ts";
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
// maxStoredBytes. Replacing an uncollected answer of the same client is not growth (only the
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
return 'stored'
`;

// KEYS: answers. ARGV: now, P, id, key
// Returns {expired, answer JSON?}: the answer leaves exactly once, also when it had expired.
const TAKE_LUA = `${ANSWER_LUA}
local id = ARGV[3]
local exp = redis.call('ZSCORE', K_ANSWERS, id)
if not exp then return {0} end
local stored = redis.call('HMGET', answer_key(id), 'key', 'answer')
drop_answer(id)
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
          [
            ...ctx.base(),
            ctx.keyDigest(clientKey),
            clientKey,
            JSON.stringify(answer),
            limits.maxAnswers,
            limits.answerTtlMs,
            answerBytes(answer),
            limits.maxStoredBytes,
          ],
        )) as StoreResult;
      }),

    takeAnswer: (clientKey: string): Promise<Answer | undefined> =>
      ctx.run(async () => {
        const [expired, answer] = (await take([answers], [...ctx.base(), ctx.keyDigest(clientKey), clientKey])) as [number, string?];
        ctx.expired("answer", expired);
        return answer === undefined ? undefined : (JSON.parse(answer) as Answer);
      }),
  };
}
