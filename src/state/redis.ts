import type Redis from "ioredis";
import type { RedisOptions } from "ioredis";
import { RelayError } from "../errors.ts";
import { sha256Hex } from "../common/tokens.ts";

/**
 * The connection to the shared datastore (Valkey or Redis >= 7.0).
 *
 * Client: ioredis. Bun's built-in RedisClient needs Redis >= 7.2 (RESP3 HELLO handling), and
 * Debian 12 and many Pi distributions ship 7.0; ioredis speaks RESP2 to any 6.x/7.x server or
 * Valkey, runs inside `bun build --compile` binaries (plain node:net/tls, no native addon),
 * caches Lua scripts by SHA (EVALSHA with an automatic EVAL fallback), and re-subscribes Pub/Sub
 * channels after a reconnect.
 */

export interface RedisSettings {
  /** redis:// or rediss:// URL; user, password and database number come from it. */
  url: string;
  /** Prefix of every key and channel, so several relays or environments share one datastore. */
  keyPrefix: string;
  /** A command that has no answer within this fails with state_unavailable (never a hang). */
  commandTimeoutMs: number;
}

/** Reconnect backoff: quick at first (a restarting Valkey is back in a second), capped at 2 s. */
const MAX_RECONNECT_DELAY_MS = 2_000;
const CONNECT_TIMEOUT_MS = 2_000;

export function redisOptions(settings: RedisSettings): RedisOptions {
  return {
    lazyConnect: false,
    connectTimeout: CONNECT_TIMEOUT_MS,
    commandTimeout: settings.commandTimeoutMs,
    // Fail fast while disconnected: a request that needs state answers 503 at once rather than
    // queueing behind a reconnect it cannot see.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), MAX_RECONNECT_DELAY_MS),
    // The relay reconnects forever; readiness reports the outage meanwhile.
    reconnectOnError: () => false,
    enableReadyCheck: true,
    // No auto-pipelining: it batches a tick's commands into one write, but builds an ioredis
    // Pipeline per tick (copying every defined script onto it, about fifty properties here) and
    // that cost more relay CPU than the writes it saved. Measured on the API v1 and legacy cycles
    // (1 and 16 pairs, Valkey): relay plus datastore CPU per cycle 3-25 % lower without it.
    // Commands sent together still share one round trip: nothing waits between them.
    enableAutoPipelining: false,
  };
}

/**
 * ioredis 5.11 traces every command through diagnostics_channel unless its TracingChannel says
 * `hasSubscribers === false`; Bun 1.4's TracingChannel has no such property (oven-sh/bun#27805),
 * so each command built a sanitized copy of its arguments and wrapped its promise for tracers
 * nobody attached. This adds Node's getter (any of the five sub-channels has a subscriber), so a
 * tracer that subscribes is still served. Idempotent; a runtime that has the property keeps its own.
 */
export function ensureTracingChannelHasSubscribers(): void {
  const dc = require("node:diagnostics_channel") as typeof import("node:diagnostics_channel");
  if (typeof dc.tracingChannel !== "function") return;
  const proto = Object.getPrototypeOf(dc.tracingChannel("tokenplace-relay:probe")) as object;
  if ("hasSubscribers" in proto) return;
  Object.defineProperty(proto, "hasSubscribers", {
    configurable: true,
    get(this: Record<"start" | "end" | "asyncStart" | "asyncEnd" | "error", { hasSubscribers?: boolean } | undefined>) {
      return [this.start, this.end, this.asyncStart, this.asyncEnd, this.error].some((c) => c?.hasSubscribers !== false);
    },
  });
}

export function connectRedis(settings: RedisSettings, role: string): Redis {
  ensureTracingChannelHasSubscribers();
  // Loaded on the first connection, not at start: a relay on in-memory state never needs the
  // client, and evaluating it was a fifth of the binary's start-up.
  const { default: RedisClient } = require("ioredis") as typeof import("ioredis");
  const client = new RedisClient(settings.url, { ...redisOptions(settings), connectionName: `tokenplace-relay:${role}` });
  // Errors surface through commands (state_unavailable) and readiness; an unhandled "error"
  // event would otherwise be printed by ioredis with the URL in it.
  client.on("error", () => {});
  return client;
}

export const stateUnavailable = (cause?: unknown) =>
  new RelayError(503, "state_unavailable", "The relay's state store is unavailable; retry shortly", {
    error: { message: "The relay's state store is unavailable; retry shortly", code: 503, type: "state_unavailable" },
  }, { "Retry-After": "1" }, cause);

/**
 * Lua that sets `NOW` (ms since the epoch): the injected clock's value in ARGV[arg] (tests), or
 * with '' the datastore's own TIME, so replicas with skewed clocks agree on leases and expiry.
 */
export const luaNow = (arg: number) => `local NOW
if ARGV[${arg}] ~= '' then
  NOW = tonumber(ARGV[${arg}])
else
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end`;

/** Resolves when the client is ready, or rejects after `timeoutMs` (connecting or reconnecting). */
export function whenReady(client: Redis, timeoutMs: number): Promise<void> {
  if (client.status === "ready") return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off("ready", onReady);
      reject(new Error("datastore not ready"));
    }, timeoutMs);
    const onReady = () => {
      clearTimeout(timer);
      resolve();
    };
    client.once("ready", onReady);
  });
}

/**
 * Runs a datastore call. While the connection is (re)established it waits at most the command
 * timeout, so a blip costs latency, not an error; any failure of the datastore becomes a JSON
 * 503 state_unavailable, never a hang or a 500.
 */
export async function guarded<T>(client: Redis, timeoutMs: number, call: () => Promise<T>): Promise<T> {
  try {
    // Checked here rather than awaited: a ready connection (nearly every call) costs no extra turn.
    if (client.status !== "ready") await whenReady(client, timeoutMs);
    return await call();
  } catch (err) {
    if (err instanceof RelayError) throw err;
    throw stateUnavailable(err);
  }
}

/** The URL with its password replaced, for logs and --check-config. */
export function redactRedisUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "redacted";
    return u.href;
  } catch {
    return "(unparsable URL)";
  }
}

/**
 * The part of a Lua helper library that `body` needs: every top-level `local` definition the body
 * names, with what those definitions name in turn, in their original order (a local must be
 * defined before the functions that use it). A script's source runs whole on every call, so each
 * `local function` it carries is a closure Redis builds again each time, used or not: a script
 * that sends the whole library pays for all of them (measured: about 6 µs of the datastore's time
 * per call for the API v1 library's 46 helpers).
 */
export function luaHelpersFor(library: string, body: string): string {
  const chunks: { names: string[]; text: string; uses: Set<string> }[] = [];
  for (const text of library.split(/\n(?=local )/)) {
    const head = /^local\s+(?:function\s+([A-Za-z_]\w*)|([A-Za-z_][\w\s,]*?)\s*=)/.exec(text);
    const names = head ? (head[1] ? [head[1]] : head[2]!.split(",").map((n) => n.trim())) : [];
    chunks.push({ names, text, uses: identifiers(text) });
  }
  const needed = identifiers(body);
  const keep = new Set<number>();
  for (let grew = true; grew; ) {
    grew = false;
    chunks.forEach((c, i) => {
      if (keep.has(i) || !(c.names.length === 0 || c.names.some((n) => needed.has(n)))) return;
      keep.add(i);
      for (const u of c.uses) needed.add(u);
      grew = true;
    });
  }
  return chunks.filter((_, i) => keep.has(i)).map((c) => c.text).join("\n");
}

const identifiers = (lua: string) => new Set(lua.match(/[A-Za-z_]\w*/g) ?? []);

/**
 * `digest` of strings that recur, remembered for the most recent `maxEntries` of them (oldest
 * forgotten first); strings longer than `maxChars` are hashed every time, so the memory it holds
 * stays below maxEntries x maxChars. Only for public values (public keys, topics made of them).
 */
export function memoDigest(digest: (s: string) => string, maxEntries: number, maxChars: number): (s: string) => string {
  const known = new Map<string, string>();
  return (s) => {
    let d = known.get(s);
    if (d !== undefined) return d;
    d = digest(s);
    if (s.length <= maxChars) {
      if (known.size >= maxEntries) known.delete(known.keys().next().value!);
      known.set(s, d);
    }
    return d;
  };
}

/**
 * How many public keys a store remembers the SHA-256 of, and the longest it remembers
 * (characters; a key is up to 8 KB, a real one ~600 characters of base64): at most 2 MiB held,
 * since a string with any character past U+00FF takes 2 bytes a character (anyone can send such
 * keys to the unauthenticated retrieve routes; a key past the limit is hashed every time). A cycle names
 * its node and client keys in several transitions (API v1: enqueue, claim, respond, retrieve;
 * legacy: /faucet, /sink, /source, /retrieve). Measured on a 600-character key freshly parsed
 * from a body, as every request's is: SHA-256 to hex about 0.5 µs, a remembered one 0.1-0.2 µs
 * (the Map lookup hashes the string too, but far more cheaply).
 */
export const KEY_DIGEST_MEMO_ENTRIES = 1_024;
export const KEY_DIGEST_MEMO_MAX_CHARS = 1_024;

/** SHA-256 hex of public keys (records are named by it), remembered as above. */
export const publicKeyDigests = () => memoDigest(sha256Hex, KEY_DIGEST_MEMO_ENTRIES, KEY_DIGEST_MEMO_MAX_CHARS);
