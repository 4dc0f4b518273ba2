import type Redis from "ioredis";
import type { Clock } from "../../clock.ts";
import { sha256Hex } from "../../common/tokens.ts";
import type { BrokerLimits } from "../../config/index.ts";
import { wakeDigest } from "../../common/redis-notifier.ts";
import { KEY_DIGEST_MEMO_ENTRIES, KEY_DIGEST_MEMO_MAX_CHARS, guarded, luaNow, memoDigest, publicKeyDigests } from "../../state/redis.ts";
import type { ExpiredKind } from "../types.ts";

/**
 * What the operation groups of RedisBrokerStore share: the key layout, the Lua prelude every
 * script starts with, and the way a script is registered and called.
 *
 * Key layout (P = `${keyPrefix}{legacy}:`; one hash tag, so every key of the legacy protocol is
 * in one cluster slot and a script may touch any of them). Public keys and session ids can be
 * kilobytes: records are named by the SHA-256 hex of the key (`<id>`, `<sh>`, `<ch>`) and keep the
 * full key inside.
 *
 *   P nodes           zset  node id -> last seen (ms)              pickNode, capacity, freshness
 *   P nodes:due       zset  node id -> when it next needs pruning  the nodes' expiry index:
 *                           earliest job expiry if anything is queued, else the first instant the
 *                           node is stale (last seen + nodeStaleMs + 1)
 *   P nodes:bytes     hash  node id -> bytes of its queued jobs    the node's share of the budget
 *   P node:<id>       hash  key                                    the full public key
 *   P q:<id>          list  job JSON, oldest first                 FIFO per node
 *   P qx:<id>         list  "<expiry ms>:<bytes>" per job,         part of the expiry index
 *                           parallel to q:<id>
 *   P answers         zset  client id -> answer expiry (ms)        capacity and expiry index
 *   P answers:bytes   hash  client id -> bytes of its answer       part of the expiry index
 *   P answer:<id>     hash  key, answer (JSON)
 *   P streams         zset  session hash -> last touched (ms)      capacity and expiry index
 *   P streams:bytes   hash  session hash -> bytes undrained        part of the expiry index
 *   P session:<sh>    hash  sid, client, ch, final ("0"/"1")
 *   P chunks:<sh>     list  chunk JSON, oldest first
 *   P client:<ch>     hash  key, sh                                the client's current session
 *   P bytes           string  payload bytes held in all            the budget (maxStoredBytes)
 *   P wj:<id>         string  "<until ms>:<digest>"                a held /sink may wait for the
 *   P wa:<ch>         string  (same)                               node's jobs, the client's answer,
 *   P ws:<ch>         string  (same)                               the client's stream (wake marks)
 *
 * Time: ARGV[1] is the injected clock's now, or "" to use the datastore's TIME (so replicas with
 * skewed clocks agree). Expiry is decided by that time, exactly as the memory store decides it by
 * its clock. Every record key also carries a native TTL (PEXPIRE, a relative duration) of at least
 * its logical lifetime plus BACKSTOP_GRACE_MS: if no replica sweeps, the records still go. The
 * expiry index (the zsets, the qx:<id> lists and the *:bytes hashes) has no TTL: it holds at most
 * one entry per bounded record (maxNodes, maxQueueDepth per node, maxAnswers, the stream sessions)
 * and prunes and sweep() drain it, so an item whose record already expired natively is still
 * counted once, and its bytes are still released once.
 *
 * Stored bytes (see ../bytes.ts; the store computes each payload's size and passes it in): each
 * entry of the expiry index carries its record's size (qx:<id> entries, answers:bytes,
 * streams:bytes), and the script that adds or removes an entry adjusts the counters in the same
 * transition: `bytes` (the total) and nodes:bytes (per node). A counter at 0 is deleted, so an empty
 * store has no keys. The total is therefore always the sum of what the index holds, whichever
 * way a record leaves: taken, drained, replaced, expired, swept, or dropped with its node.
 *
 * Wake-ups (src/common/redis-notifier.ts; the same scheme as API v1's, src/v1/redis/state.ts):
 * the transitions that make work available (enqueueJob, putAnswer, openStream, pushChunk) publish
 * the wake-up of their topic themselves, in their own script, and only while a poll may be held
 * for it: takeJobs, takeAnswer and drainStream, called with the time the caller may still hold,
 * mark the topic (wj:, wa:, ws:) when they find nothing. A poll that will be held subscribes
 * before its second look, and its look and the producer's script are atomic: either the look
 * finds the work, or it ran first and the producer sees the mark and publishes. A woken replica's
 * re-check runs after the publishing script, so it sees what the script wrote. A published mark
 * is used up: every poll of the topic, on every replica, is woken and looks again, and one that
 * still finds nothing marks again before it waits again (the long poll subscribes before each
 * wait's look). A cycle whose steps find their work at once publishes nothing, and no replica
 * reads its own wake-ups back.
 *
 * Bounds: each check and its write are one script (maxNodes, maxQueueDepth, maxAnswers,
 * maxStreamChunks, maxStoredBytes and a node's share of it; maxStreamSessions when a streaming job
 * is accepted, as in memory). At capacity the store runs one sweep (bounded: at most `sweepBatch`
 * due entries of each kind) and asks again, as the memory store sweeps and rechecks.
 */

export type BrokerStoreLimits = Pick<
  BrokerLimits,
  | "maxQueueDepth" | "maxNodes" | "maxAnswers" | "maxStreamSessions" | "maxStreamChunks"
  | "nodeStaleMs" | "jobTtlMs" | "answerTtlMs" | "streamTtlMs" | "maxStoredBytes"
>;

/** Native TTLs outlive the logical deadline by this much, so a sweep normally does the counting. */
export const BACKSTOP_GRACE_MS = 1_000;
/**
 * A look that found nothing for a poll that may be held marks its topic until the hold's end plus
 * this much (the reply's way back, timers, the hold's last look), as API v1's claim marks its node
 * (src/v1/redis/state.ts): until then a transition that makes the work available publishes the
 * wake-up.
 */
export const WAKE_MARGIN_MS = 1_000;
/** Most records of each kind one sweep prunes: bounded work per call (replicas each sweep every second). */
export const DEFAULT_SWEEP_BATCH = 256;

/**
 * Every script begins with this. ARGV[1] = now ("" for the datastore's clock), ARGV[2] = P.
 * Numbers stay below 2^53 and print exactly (ms since the epoch have 13 digits).
 */
export const PRELUDE_LUA = `
local P = ARGV[2]
${luaNow(1)}
local GRACE = ${BACKSTOP_GRACE_MS}
-- Lengthens a key's native TTL to at least ms (never shortens it; a missing key is left alone).
local function extend(key, ms)
  local cur = redis.call('PTTL', key)
  if cur < ms then redis.call('PEXPIRE', key, ms) end
end
-- The byte budget: payload bytes held in all. Deleted at 0 (an empty store has no keys).
local K_BYTES = P .. 'bytes'
local function add_bytes(n)
  if n ~= 0 and redis.call('INCRBY', K_BYTES, n) == 0 then redis.call('DEL', K_BYTES) end
end
local function fits_bytes(n, max)
  return tonumber(redis.call('GET', K_BYTES) or 0) + n <= max
end
-- Adds n (negative: releases) to a per-record counter in hash h and to the total; 0 deletes the field.
local function add_record_bytes(h, field, n)
  if n == 0 then return end
  if redis.call('HINCRBY', h, field, n) == 0 then redis.call('HDEL', h, field) end
  add_bytes(n)
end
local function record_bytes(h, field)
  return tonumber(redis.call('HGET', h, field) or 0)
end
-- Wake marks (see "Wake-ups" below). A look that found nothing for a poll that may now be held
-- for hold ms marks its topic; the mark only grows, since another poll of the same topic may be
-- held elsewhere for longer and a poll's last look (hold 0) holds nothing. The mark carries the
-- digest to publish, so the transition that makes the work available needs no key of its own.
local function mark_waiter(key, hold, digest)
  if hold <= 0 or digest == '' then return end
  local w = math.ceil(NOW + hold) + ${WAKE_MARGIN_MS}
  local cur = redis.call('GET', key)
  if cur and tonumber(string.sub(cur, 1, string.find(cur, ':', 1, true) - 1)) >= w then return end
  redis.call('SET', key, w .. ':' .. digest, 'PX', w - NOW + GRACE)
end
-- Publishes the marked topic's wake-up on channel ('' = the caller's notifier publishes), if the
-- mark is still live (past it, no poll can be held for this work any more). A mark is used once:
-- every poll the wake-up reaches looks again, and one that still finds nothing marks again
-- before it waits again.
local function wake_waiter(key, channel)
  if channel == '' then return end
  local cur = redis.call('GET', key)
  if not cur then return end
  redis.call('DEL', key)
  local c = string.find(cur, ':', 1, true)
  if tonumber(string.sub(cur, 1, c - 1)) > NOW then redis.call('PUBLISH', channel, string.sub(cur, c + 1)) end
end
`;

export type Script = (keys: string[], args: (string | number)[]) => Promise<unknown>;

/** What each operation group gets from the store. */
export interface StoreContext {
  readonly client: Redis;
  /** `${keyPrefix}{legacy}:` */
  readonly prefix: string;
  readonly limits: BrokerStoreLimits;
  readonly sweepBatch: number;
  /** ARGV[1] and ARGV[2] of every script: the injected clock's now (or "") and the prefix. */
  base(): [string, string];
  /** This process's time in ms (the injected clock's, else a monotonic one), for local caches. */
  now(): number;
  key(name: string): string;
  /** hashKey of a public key, remembered (src/state/redis.ts): the same keys recur every cycle. */
  keyDigest(publicKey: string): string;
  /** Registers a script (PRELUDE_LUA + body) on the client under a name unique to this store. */
  script(name: string, numberOfKeys: number, lua: string): Script;
  /** The Pub/Sub channel the producing scripts publish wake-ups on ('' = the handlers' notifier does). */
  readonly wakeChannel: string;
  /**
   * The last two ARGV of a look that may be followed by a hold of `holdMs`: the whole ms to mark
   * and the digest of `topic` to publish then; [0, ''] (nothing marked) when the store publishes
   * nothing or the poll will not be held.
   */
  waiter(topic: string, holdMs: number | undefined): [number, string];
  /** Runs a datastore call; failures become 503 state_unavailable. */
  run<T>(call: () => Promise<T>): Promise<T>;
  expired(kind: ExpiredKind, count: unknown): void;
}

export const hashKey = sha256Hex;

export function createContext(
  client: Redis,
  opts: { keyPrefix: string; limits: BrokerStoreLimits; clock?: Clock; commandTimeoutMs: number; sweepBatch?: number; wakeChannel?: string },
  onExpire: (kind: ExpiredKind, count: number) => void,
): StoreContext {
  const prefix = `${opts.keyPrefix}{legacy}:`;
  const clock = opts.clock;
  const wakeChannel = opts.wakeChannel ?? "";
  // What the notifier subscribes by (wakeDigest); topics name one public key each and recur every
  // cycle, as the keys do, so their digests are remembered the same way.
  const topicDigest = memoDigest(wakeDigest, KEY_DIGEST_MEMO_ENTRIES, KEY_DIGEST_MEMO_MAX_CHARS);
  return {
    client,
    prefix,
    limits: opts.limits,
    sweepBatch: opts.sweepBatch ?? DEFAULT_SWEEP_BATCH,
    base: () => [clock ? String(Math.floor(clock.now())) : "", prefix],
    now: () => (clock ? clock.now() : performance.now()),
    key: (name) => prefix + name,
    keyDigest: publicKeyDigests(),
    wakeChannel,
    waiter: (topic, holdMs) =>
      wakeChannel === "" || holdMs === undefined || holdMs <= 0 ? [0, ""] : [Math.ceil(holdMs), topicDigest(topic)],
    script(name, numberOfKeys, lua) {
      // The scripts take the prefix as an argument, so stores sharing a client share the definitions.
      const command = `tokenplaceLegacy${name}`;
      client.defineCommand(command, { numberOfKeys, lua: PRELUDE_LUA + lua });
      const fn = (client as unknown as Record<string, (...args: (string | number)[]) => Promise<unknown>>)[command]!;
      return (keys, args) => fn.call(client, ...keys, ...args);
    },
    run: (call) => guarded(client, opts.commandTimeoutMs, call),
    expired(kind, count) {
      const n = Number(count);
      if (n > 0) onExpire(kind, n);
    },
  };
}
