import type Redis from "ioredis";
import type { Clock } from "../../clock.ts";
import { wakeDigest } from "../../common/redis-notifier.ts";
import { sha256Hex } from "../../common/tokens.ts";
import { guarded, luaHelpersFor, luaNow, publicKeyDigests } from "../../state/redis.ts";
import { MAX_TERMINAL_RECORDS_PER_REQUEST_SLOT, envelopeBytes, type MemoryLimits } from "../memory/state.ts";
import type { EvictionReason, Outcome, V1Events } from "../store.ts";

/**
 * API v1 state in Valkey/Redis: the key layout, the Lua helpers every transition shares, and
 * the runner that sends one script per transition (spec §7.8: one script is atomic, so exactly
 * one terminal transition wins across every relay replica).
 *
 * Keys (P = `${keyPrefix}{v1}:`; the one hash tag puts every key in one cluster slot, so a script
 * may touch any of them). Public keys are up to 8 KB, so records are named by the SHA-256 hex of
 * a key (nh: node key, ch: client key, ph: pair id of spec §2) and keep the full key inside:
 *
 *   P nodes            zset nh -> registration seq (registration order, spec §7.6)
 *   P seq              counter of registrations
 *   P node:{nh}        hash key, seq, caps (JSON), cred (digest), ls (last seen), lease, held
 *   P q:{nh}           list: the node's FIFO queue of ph, or u:{id} for untracked requests
 *   P fl:{nh}          zset ph -> accounting lease end: in flight at the node (spec §7.3)
 *   P rids:{nh}        hash request_id -> ph for work queued or in flight at the node
 *   P req:{ph}         hash (pending record, spec §7.2): node, rid, adm, dl, cd, st (q|f),
 *                      env (envelope JSON), b (its bytes), o (owner, if charged), started,
 *                      prog (latest progress JSON), pb
 *   P ureq:{id}        hash env, b, o, enq, exp, node: a queued request without request_id
 *   P term:{ph}        hash st, rs, exp, m: terminal record (spec §7.5); m = its x:terminal member
 *   P out:{ph}         hash o, exp, m: outcome record
 *   P tomb:{tid}       hash st, rs, dl, own, exp: control tombstone, tid = sha1(nh, request_id)
 *   P ansv:{ch}        hash answer id -> envelope JSON; answer id = ph, or u:{id} when untracked
 *   P ansb:{ch}        hash answer id -> its bytes
 *   P ansu:{ch}        zset untracked answer id -> arrival order (retrieve without request_id)
 *   P rr, P rrg        round-robin cursors: per tie set (capped hash), and the global one
 *   P rseq             counter ordering terminal and outcome records created in the same ms
 *   P bytes            ciphertext bytes held (absent = 0)
 *   P cbytes           hash owner -> bytes of live requests charged to that client address
 *                      (owner = SHA-256 hex of the address; a field leaves at 0)
 *   P x:deadline       zset ph -> deadline: every pending record (its size counts live requests)
 *   P x:untracked      zset id -> expiry: every queued untracked request (counted with the above)
 *   P x:answers        zset ch:aid -> expiry: every stored answer (its size is the answer count)
 *   P x:terminal, P x:outcome   zset seq:ph -> expiry (oldest first: the cap forgets them first)
 *   P x:tombstone      zset tid -> expiry
 *   P x:evict          zset nh -> earliest time the node can be evictable (spec §7.1)
 *
 * Records expire by the store's clock, not by Redis TTLs: an injected clock (tests) and the
 * datastore clock must both hold, so every record that ends by time sits in an x: index that
 * sweep drains a bounded batch at a time, and every read checks the expiry itself. Counts are the
 * sizes of those indexes; the one counter, bytes, moves with the records that carry their own
 * size (b, pb, ansb), so what is released is always what was added; so do the per-address
 * counters of cbytes, released with the b of the record that names its owner (o).
 */

/** The bounds and lifetimes the store enforces (milliseconds), as for the memory store. */
export type RedisLimits = MemoryLimits & { leaseMs: number };

export { envelopeBytes };
export const sha256 = sha256Hex;

/** Name of the records of one (client key, request_id) pair: the pair identifies a request (spec §2). */
export const pairHash = (clientKey: string, requestId: string) => sha256(`${clientKey.length}:${clientKey}${requestId}`);

export interface Script {
  name: string;
  lua: string;
}

/**
 * Helpers shared by every script, mirroring MemoryState (memory/state.ts). ARGV[1] is the key
 * prefix, ARGV[2] the injected clock's now ('' = the datastore's TIME, so replicas with skewed
 * clocks agree); a script's own arguments start at ARGV[3]. The limits are constants of the
 * script's source (LIM, see luaTable): decoding them from JSON on every call cost each
 * transition time on the datastore's one thread, and a different configuration is simply a
 * different script (another SHA). Times are whole milliseconds. A script returns out(result): its
 * answer plus what it did, for metrics.
 */
const prelude = (limits: string) => `
local P = ARGV[1]
${luaNow(2)}
local LIM = ${limits}
`;

/**
 * A poll that found nothing may be held this much longer than the hold it asked for (the reply's
 * way back, timers), and its node still counts as possibly waiting (claim's w).
 */
const WAKE_MARGIN_MS = 1_000;

export const V1_LUA_HELPERS = `
local WAKE_MARGIN_MS = ${WAKE_MARGIN_MS}
local EV = {}
local function ev(e) EV[#EV + 1] = e end
local function out(r) return cjson.encode({ r = r, e = table.concat(EV, ';') }) end
-- An envelope goes back as a reply of its own: inside out()'s JSON it would be escaped by cjson
-- and parsed twice by the relay.
local function outWith(r, envelope) return { out(r), envelope } end
local function num(x) return string.format('%.17g', x) end

local KN, KSEQ, KRR, KRRG, KRSEQ, KBYTES, KCB = P .. 'nodes', P .. 'seq', P .. 'rr', P .. 'rrg', P .. 'rseq', P .. 'bytes', P .. 'cbytes'
local XEVICT, XDL, XUNT, XANS = P .. 'x:evict', P .. 'x:deadline', P .. 'x:untracked', P .. 'x:answers'
local XTERM, XOUT, XTOMB = P .. 'x:terminal', P .. 'x:outcome', P .. 'x:tombstone'
local function kNode(nh) return P .. 'node:' .. nh end
local function kQ(nh) return P .. 'q:' .. nh end
local function kFl(nh) return P .. 'fl:' .. nh end
local function kRids(nh) return P .. 'rids:' .. nh end
local function kReq(ph) return P .. 'req:' .. ph end
local function kUreq(id) return P .. 'ureq:' .. id end
local function kTerm(ph) return P .. 'term:' .. ph end
local function kOut(ph) return P .. 'out:' .. ph end
local function kTomb(tid) return P .. 'tomb:' .. tid end
local function kAnsV(ch) return P .. 'ansv:' .. ch end
local function kAnsB(ch) return P .. 'ansb:' .. ch end
local function kAnsU(ch) return P .. 'ansu:' .. ch end
local function isUntracked(item) return string.sub(item, 1, 2) == 'u:' end

-- The byte budget: ciphertext held in queued and in-flight requests, progress and answers.
local function addBytes(n)
  if n ~= 0 and redis.call('INCRBY', KBYTES, n) == 0 then redis.call('DEL', KBYTES) end
end
local function fits(n)
  return LIM.maxStoredBytes == nil or tonumber(redis.call('GET', KBYTES) or 0) + n <= LIM.maxStoredBytes
end
-- A client address's share of it (o = owner hash, '' or nil = charged to no address).
local function addClientBytes(o, n)
  if o and o ~= '' and n ~= 0 and redis.call('HINCRBY', KCB, o, n) == 0 then redis.call('HDEL', KCB, o) end
end
local function fitsClient(o, n)
  return LIM.maxStoredBytesPerClient == nil or o == '' or tonumber(redis.call('HGET', KCB, o) or 0) + n <= LIM.maxStoredBytesPerClient
end
-- A queued request without request_id leaves (claimed, expired, its node gone): its record and bytes go.
local function dropUntracked(id)
  local u = redis.call('HMGET', kUreq(id), 'b', 'o')
  local b = tonumber(u[1]) or 0
  addBytes(-b)
  addClientBytes(u[2], -b)
  redis.call('DEL', kUreq(id))
  redis.call('ZREM', XUNT, id)
end

-- Terminal and outcome records: x: members are seq:ph, so equal expiries keep creation order.
local function recMember(ph) return string.format('%016d', redis.call('INCR', KRSEQ)) .. ':' .. ph end
local function recPair(member) return string.sub(member, 18) end
-- A record is always written whole, with its member m: without m there is nothing to delete (a
-- fresh admission, the usual case, costs one call instead of two).
local function dropRecord(index, key)
  local m = redis.call('HGET', key, 'm')
  if m then
    redis.call('ZREM', index, m)
    redis.call('DEL', key)
  end
end
-- Past the cap the oldest records are forgotten first (they cost a client nothing to create).
local function capRecords(index, keyOf)
  while redis.call('ZCARD', index) >= LIM.maxTerminalRecords do
    redis.call('DEL', keyOf(recPair(redis.call('ZPOPMIN', index)[1])))
  end
end

-- Digests are SHA-256 hex; an absent one ('') never matches (spec §3.2).
local function digestEquals(a, b) return a ~= nil and a ~= false and b ~= '' and a == b end

-- Node liveness (spec §7.1): ls = last seen, lease = its lease, held = end of its long poll.
local function nodeTimes(nh)
  local f = redis.call('HMGET', kNode(nh), 'ls', 'lease', 'held')
  if not f[1] then return nil end
  return tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
end
local function isStale(ls, lease, held) return NOW - ls > lease and held <= NOW end
local function liveInFlight(nh) return redis.call('ZCOUNT', kFl(nh), '(' .. num(NOW), '+inf') end
local function isEvictable(nh, ls, lease, held) return isStale(ls, lease, held) and liveInFlight(nh) == 0 end
-- The first whole millisecond at which the node is stale.
local function staleAt(ls, lease, held) return math.max(math.floor(ls + lease) + 1, math.ceil(held)) end
-- x:evict holds a lower bound of when the node may be evictable; sweep raises it when it is not.
local function lowerEvict(nh)
  local ls, lease, held = nodeTimes(nh)
  if ls then redis.call('ZADD', XEVICT, staleAt(ls, lease, held), nh) end
end

local function getTerminal(ph)
  local t = redis.call('HMGET', kTerm(ph), 'st', 'rs', 'exp')
  if t[1] and tonumber(t[3]) > NOW then return t[1], t[2] end
  return nil
end

-- The pending record (and its buffered progress) ends and releases its bytes; callers dequeue it first.
-- releasePending: the same, for a caller that already read the record's b, pb and o.
local function releasePending(ph, b, pb, o)
  redis.call('DEL', kReq(ph))
  redis.call('ZREM', XDL, ph)
  addBytes(-(tonumber(b) or 0) - (tonumber(pb) or 0))
  addClientBytes(o, -(tonumber(b) or 0))
end
local function dropPending(ph)
  local r = redis.call('HMGET', kReq(ph), 'b', 'pb', 'o')
  releasePending(ph, r[1], r[2], r[3])
end

-- A terminal outcome is counted once per pair (an expired but unswept record still counts).
local function countOutcome(ph, outcome)
  if redis.call('EXISTS', kOut(ph)) == 1 then return end
  capRecords(XOUT, kOut)
  local exp, m = NOW + LIM.terminalTtlMs, recMember(ph)
  redis.call('HSET', kOut(ph), 'o', outcome, 'exp', exp, 'm', m)
  redis.call('ZADD', XOUT, exp, m)
  ev('outcome:' .. outcome)
end

local function makeTerminal(ph, status, reason)
  capRecords(XTERM, kTerm)
  dropRecord(XTERM, kTerm(ph))
  local exp, m = NOW + LIM.terminalTtlMs, recMember(ph)
  redis.call('HSET', kTerm(ph), 'st', status, 'rs', reason, 'exp', exp, 'm', m)
  redis.call('ZADD', XTERM, exp, m)
  countOutcome(ph, status)
  dropPending(ph)
end

-- request_id ids are unique per node while queued or in flight (spec §6.6).
local function forgetRid(nh, rid, ph)
  if rid and redis.call('HGET', kRids(nh), rid) == ph then redis.call('HDEL', kRids(nh), rid) end
end

-- Removes a queued request from its node's queue; true when it was there.
local function dequeue(nh, ph)
  if redis.call('LREM', kQ(nh), 1, ph) == 0 then return false end
  forgetRid(nh, redis.call('HGET', kReq(ph), 'rid'), ph)
  return true
end

-- Leaves the owner a "stop" signal for work it held (spec §7.5).
local function tombstone(nh, rid, owner, deadline, status, reason)
  local tid = redis.sha1hex(nh .. '\\n' .. rid)
  local exp = NOW + LIM.tombstoneTtlMs
  redis.call('HSET', kTomb(tid), 'st', status, 'rs', reason, 'dl', deadline, 'own', owner, 'exp', exp)
  redis.call('ZADD', XTOMB, exp, tid)
end

-- Ends a request in flight at nh: tombstone for the owner, terminal for the client.
local function endInFlight(nh, cred, ph, status, reason)
  local r = redis.call('HMGET', kReq(ph), 'rid', 'dl')
  redis.call('ZREM', kFl(nh), ph)
  if r[1] then
    forgetRid(nh, r[1], ph)
    tombstone(nh, r[1], cred, tonumber(r[2]), status, reason)
  end
  makeTerminal(ph, status, reason)
  lowerEvict(nh)
end

-- Unregister and eviction share their effects (spec §6.4, §7.1).
local function removeNode(nh, reason)
  local cred = redis.call('HGET', kNode(nh), 'cred')
  for _, item in ipairs(redis.call('LRANGE', kQ(nh), 0, -1)) do
    if isUntracked(item) then
      dropUntracked(string.sub(item, 3))
    else
      local dl = tonumber(redis.call('HGET', kReq(item), 'dl'))
      -- A deadline that already passed wins: housekeeping expires requests before it evicts (spec §7.7).
      if dl and dl <= NOW then makeTerminal(item, 'expired', 'pending_request_ttl_exceeded')
      elseif dl then makeTerminal(item, 'cancelled', 'server_unregistered') end
    end
  end
  for _, ph in ipairs(redis.call('ZRANGE', kFl(nh), 0, -1)) do
    local dl = tonumber(redis.call('HGET', kReq(ph), 'dl'))
    if dl and dl <= NOW then endInFlight(nh, cred, ph, 'expired', 'provider_timeout')
    else endInFlight(nh, cred, ph, 'cancelled', 'server_unregistered') end
  end
  redis.call('DEL', kNode(nh), kQ(nh), kFl(nh), kRids(nh))
  redis.call('ZREM', KN, nh)
  redis.call('ZREM', XEVICT, nh)
  ev('evicted:' .. reason)
end

-- Deadline passed: the request ends as expired wherever it is (queued, or in flight with a tombstone).
local function expirePending(ph, reason)
  local nh = redis.call('HGET', kReq(ph), 'node')
  if not nh then return end
  local cred = redis.call('HGET', kNode(nh), 'cred')
  if cred then
    if redis.call('ZSCORE', kFl(nh), ph) then return endInFlight(nh, cred, ph, 'expired', reason) end
    dequeue(nh, ph)
  end
  makeTerminal(ph, 'expired', reason)
end

-- Answers by client; untracked ones also in arrival order (retrieve without request_id).
local function hasAnswer(ch, aid) return redis.call('HEXISTS', kAnsV(ch), aid) == 1 end
-- fresh: the caller checked that ch has no answer aid (ansv and ansb are written and deleted together).
local function storeAnswer(ch, aid, envelope, bytes, exp, fresh)
  local previous = not fresh and redis.call('HGET', kAnsB(ch), aid)
  if previous then
    addBytes(-tonumber(previous))
  elseif isUntracked(aid) then
    local last = redis.call('ZRANGE', kAnsU(ch), -1, -1, 'WITHSCORES')
    redis.call('ZADD', kAnsU(ch), last[2] and (tonumber(last[2]) + 1) or 0, aid)
  end
  redis.call('HSET', kAnsV(ch), aid, envelope)
  redis.call('HSET', kAnsB(ch), aid, bytes)
  addBytes(bytes)
  redis.call('ZADD', XANS, exp, ch .. ':' .. aid)
end
local function dropAnswer(ch, aid)
  addBytes(-(tonumber(redis.call('HGET', kAnsB(ch), aid)) or 0))
  redis.call('HDEL', kAnsV(ch), aid)
  redis.call('HDEL', kAnsB(ch), aid)
  -- Only answers to requests without request_id are in arrival order (storeAnswer).
  if isUntracked(aid) then redis.call('ZREM', kAnsU(ch), aid) end
  redis.call('ZREM', XANS, ch .. ':' .. aid)
end
-- Removes and returns one answer: the one named aid, or (aid nil) the client's oldest answer to
-- a request without request_id. A tracked answer goes only to a retrieve that names its id: the
-- client key is public, the request id is not (spec §3.4).
local function takeAnswer(ch, aid)
  local envelope
  if aid == nil then
    aid = redis.call('ZRANGE', kAnsU(ch), 0, 0)[1]
    if not aid then return nil end
    envelope = redis.call('HGET', kAnsV(ch), aid)
  else
    -- Reading it is the existence check (no HEXISTS first).
    envelope = redis.call('HGET', kAnsV(ch), aid)
    if not envelope then return nil end
  end
  dropAnswer(ch, aid)
  return envelope
end
`;

/** One transition: its body, run after the shared helpers (RedisState.define puts them together). */
export const script = (name: string, body: string): Script => ({ name: `tokenplaceV1${name}`, lua: body });

/** A Lua table constructor of whole numbers (absent keys stay nil, e.g. an unbounded budget). */
const luaTable = (values: Record<string, number | undefined>) =>
  `{ ${Object.entries(values).filter(([, v]) => v !== undefined).map(([k, v]) => `${k} = ${Math.floor(v!)}`).join(", ")} }`;

/** A script's reply: out()'s JSON, or outWith()'s [JSON, envelope]. */
type Command = (...args: (string | number)[]) => Promise<string | [string, string]>;

/** What every operation group receives: the connection, the key prefix, the limits and the clock. */
export class RedisState {
  readonly prefix: string;
  private readonly nodesKey: string;
  /** LIM of every script (see prelude), and the suffix that names this configuration's commands. */
  private readonly limitsLua: string;
  private readonly commandSuffix: string;
  private readonly commands = new Map<string, Command>();
  /** SHA-256 hex of a public key (or of a node's wake-up topic), remembered (src/state/redis.ts). */
  readonly keyDigest = publicKeyDigests();

  constructor(
    readonly client: Redis,
    keyPrefix: string,
    readonly limits: RedisLimits,
    private readonly clock: Clock | undefined,
    private readonly timeoutMs: number,
    private readonly events: V1Events,
    /** Where enqueue and respond publish their wake-ups ('' = they do not, see RedisV1StoreOptions). */
    readonly wakeChannel: string,
  ) {
    this.prefix = `${keyPrefix}{v1}:`;
    this.nodesKey = `${this.prefix}nodes`;
    // Whole milliseconds: the scripts compare and store integers (Lua prints 14 significant digits).
    const ms = (v: number) => Math.max(0, Math.ceil(v));
    this.limitsLua = luaTable({
      maxNodes: limits.maxNodes,
      maxRequests: limits.maxRequests,
      maxAnswers: limits.maxAnswers,
      inFlightTtlMs: ms(limits.inFlightTtlMs),
      tombstoneTtlMs: ms(limits.tombstoneTtlMs),
      terminalTtlMs: ms(limits.terminalTtlMs),
      pendingTtlMs: ms(limits.pendingTtlMs),
      answerTtlMs: ms(limits.answerTtlMs),
      maxTerminalRecords: limits.maxRequests * MAX_TERMINAL_RECORDS_PER_REQUEST_SLOT,
      maxStoredBytes: limits.maxStoredBytes,
      maxStoredBytesPerClient: limits.maxStoredBytesPerClient,
    });
    // Stores with other limits may share the connection (and its command table): each
    // configuration registers its own commands.
    this.commandSuffix = sha256(this.limitsLua).slice(0, 12);
  }

  /** Registers the scripts on the client (ioredis then sends EVALSHA, falling back to EVAL). */
  define(scripts: Script[]): void {
    const prefix = prelude(this.limitsLua);
    for (const s of scripts) {
      const name = `${s.name}_${this.commandSuffix}`;
      // Only the helpers this transition uses (luaHelpersFor): each one is a closure per call.
      this.client.defineCommand(name, { numberOfKeys: 1, lua: prefix + luaHelpersFor(V1_LUA_HELPERS, s.lua) + "\n" + s.lua });
      this.commands.set(s.name, (this.client as unknown as Record<string, Command>)[name]!);
    }
  }

  /** Runs one transition; any datastore failure is a 503 state_unavailable (src/state/redis.ts). */
  async run<T>(s: Script, ...args: (string | number)[]): Promise<T> {
    return this.decode<T>(await this.send(s, args))[0];
  }

  /** run() of a transition that may answer outWith(r, envelope): [r, envelope or undefined]. */
  async runWith<T>(s: Script, ...args: (string | number)[]): Promise<[T, string | undefined]> {
    return this.decode<T>(await this.send(s, args));
  }

  private send(s: Script, args: (string | number)[]) {
    const now = this.clock ? String(Math.floor(this.clock.now())) : "";
    const command = this.commands.get(s.name)!;
    return guarded(this.client, this.timeoutMs, () => command.call(this.client, this.nodesKey, this.prefix, now, ...args));
  }

  private decode<T>(reply: string | [string, string]): [T, string | undefined] {
    const [json, envelope] = typeof reply === "string" ? [reply, undefined] : reply;
    const { r, e } = JSON.parse(json) as { r: T; e: string };
    if (e) this.emit(e);
    return [r, envelope];
  }

  private emit(encoded: string): void {
    for (const e of encoded.split(";")) {
      const [kind, what, count] = e.split(":");
      if (kind === "evicted") this.events.evicted(what as EvictionReason);
      else if (kind === "outcome") this.events.outcome(what as Outcome);
      else if (kind === "dropped") this.events.dropped(what as "answer" | "untracked_request", Number(count));
    }
  }
}

/** cjson encodes an empty Lua table as {}: read lists through this. */
export const list = <T>(v: T[] | Record<string, never> | undefined): T[] => (Array.isArray(v) ? v : []);

/**
 * The wake-up a transition publishes with its own ARGV (channel, digest; '' = none): Pub/Sub
 * delivers it while the script runs, but a woken replica's re-check runs after the script, so it
 * always sees what the script wrote. Published only when someone may wait: a held poll or
 * retrieve first ran a claim or retrieve that found nothing, and that script marked the node
 * (w = until when) or the pending request (w); a cycle whose steps each find what they look for
 * publishes nothing, and no replica reads its own wake-ups back.
 */
export const LUA_WAKE = (channelArg: number) => `
local function wake()
  if ARGV[${channelArg}] ~= '' then redis.call('PUBLISH', ARGV[${channelArg}], ARGV[${channelArg + 1}]) end
end
`;

/**
 * ARGV pair (channel, digest) of the wake-up of `topic`, or none when the store does not publish.
 * `recurs`: the topic names only a public key (a node's), so its digest is remembered (keyDigest).
 */
export const wakeArgs = (s: RedisState, topic: () => string, recurs = false): [string, string] =>
  s.wakeChannel === "" ? ["", ""] : [s.wakeChannel, recurs ? s.keyDigest(topic()) : wakeDigest(topic())];

/** Whole milliseconds (see RedisState). */
export const wholeMs = (v: number) => Math.max(0, Math.ceil(v));
