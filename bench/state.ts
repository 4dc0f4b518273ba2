/**
 * The state backends `npm run bench:v1` compares: the relay's memory store, and Valkey/Redis
 * (TOKENPLACE_RELAY_STATE_BACKEND=redis, docs/shared-state.md). For Redis the bench runs a private
 * redis-server on a free loopback port (test/helpers/redis.ts) configured as docs/shared-state.md
 * recommends (AOF, appendfsync everysec, noeviction), or uses `--redis-url` (an existing Valkey or
 * Redis; the run then keeps to its own key prefix).
 */
import Redis from "ioredis";
import { redisServerPath, startRedis, type RedisServer } from "../test/helpers/redis.ts";

export type StateBackend = "memory" | "redis";
export const STATE_BACKENDS: readonly StateBackend[] = ["memory", "redis"];
export const STATE_LABEL: Record<StateBackend, string> = { memory: "memory store", redis: "Valkey/Redis store" };

export interface StateChoice {
  states: StateBackend[];
  /** Printed before the table: why a backend was left out of the default. */
  note?: string;
}

/**
 * `--state=memory,redis` (any order, any subset). Without it: both when redis-server is installed
 * or `--redis-url` is given, else memory alone with a note. Asking for redis explicitly without
 * either is an error, not a silent skip.
 */
export function chooseStates(argv: string[], redisUrl: string | undefined): StateChoice {
  const arg = argv.find((a) => a.startsWith("--state=") || a.startsWith("--states="));
  const haveRedis = redisUrl !== undefined || redisServerPath() !== undefined;
  if (!arg) {
    if (haveRedis) return { states: ["memory", "redis"] };
    return {
      states: ["memory"],
      note: "NOTE: redis-server is not installed (apt-get install redis-server), so only the memory store is measured; " +
        "install it, or pass --redis-url=redis://host:port/db, to compare Valkey/Redis side by side.",
    };
  }
  const names = arg.slice(arg.indexOf("=") + 1).split(",").map((s) => s.trim().toLowerCase()).filter(Boolean);
  const states: StateBackend[] = [];
  for (const n of names) {
    const s = n === "valkey" ? "redis" : n;
    if (!STATE_BACKENDS.includes(s as StateBackend)) throw new Error(`--state: unknown backend ${JSON.stringify(n)} (memory, redis)`);
    if (!states.includes(s as StateBackend)) states.push(s as StateBackend);
  }
  if (states.length === 0) throw new Error("--state: name at least one of memory, redis");
  if (states.includes("redis") && !haveRedis) {
    throw new Error("--state=redis: redis-server is not installed (apt-get install redis-server, or scripts/install-system-deps.sh), and no --redis-url was given");
  }
  // Memory first, so the table's columns and the ratio read the same way whatever the order given.
  return { states: STATE_BACKENDS.filter((s) => states.includes(s)) };
}

export type CommandStats = Record<string, { calls: number; usec: number }>;

export interface StateStore {
  /** e.g. "redis 7.0.15 (private redis-server, AOF everysec)". */
  describe: string;
  /** What a relay needs in its environment to use this datastore. */
  relayEnv: Record<string, string>;
  /** The datastore's INFO commandstats (lower-case names; commands run inside scripts count too). */
  commandStats(): Promise<CommandStats>;
  /** redis-server's pid when the bench runs it (for its CPU time), else undefined. */
  pid: number | undefined;
  stop(): Promise<void>;
}

const TICKS_PER_SECOND = Number(Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim()) || 100;

/** CPU time (user + system) a process has used so far, in ms, from /proc (Linux); NaN elsewhere. */
export async function processCpuMs(pid: number): Promise<number> {
  try {
    const stat = await Bun.file(`/proc/${pid}/stat`).text();
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(f[11]) + Number(f[12])) * 1000) / TICKS_PER_SECOND;
  } catch {
    return NaN;
  }
}

/** `after - before`, without the bench's own INFO calls. */
export function commandDelta(before: CommandStats, after: CommandStats): CommandStats {
  const out: CommandStats = {};
  for (const [cmd, a] of Object.entries(after)) {
    if (cmd === "info") continue;
    const b = before[cmd] ?? { calls: 0, usec: 0 };
    if (a.calls > b.calls) out[cmd] = { calls: a.calls - b.calls, usec: a.usec - b.usec };
  }
  return out;
}

export function addStats(into: CommandStats, more: CommandStats): void {
  for (const [cmd, v] of Object.entries(more)) {
    const t = (into[cmd] ??= { calls: 0, usec: 0 });
    t.calls += v.calls;
    t.usec += v.usec;
  }
}

/** Starts (or connects to) the datastore the redis relays of this run share. */
export async function openRedisStore(redisUrl: string | undefined, runId: string): Promise<StateStore> {
  let server: RedisServer | undefined;
  let url: string;
  const env: Record<string, string> = { TOKENPLACE_RELAY_STATE_BACKEND: "redis" };
  if (redisUrl) {
    url = redisUrl;
    // An existing datastore may hold other relays' state: this run keeps to its own keys.
    env.TOKENPLACE_RELAY_REDIS_KEY_PREFIX = `bench-v1-${runId.slice(0, 8)}:`;
  } else {
    server = await startRedis({ persist: false });
    url = `${server.url}/0`;
  }
  env.TOKENPLACE_RELAY_REDIS_URL = url;
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 5_000 });
  try {
    await client.connect();
    if (server) {
      // As docs/shared-state.md recommends for production, not startRedis' fsync-always test setting.
      await client.config("SET", "appendfsync", "everysec");
      await client.config("SET", "appendonly", "yes");
      await client.config("SET", "maxmemory-policy", "noeviction");
    }
    const info = await client.info("server");
    const field = (name: string) => new RegExp(`^${name}:(.*)$`, "m").exec(info)?.[1]?.trim();
    const valkey = field("valkey_version");
    const version = valkey ? `valkey ${valkey}` : `redis ${field("redis_version") ?? "?"}`;
    const where = server ? "private redis-server on loopback, AOF appendfsync everysec" : `--redis-url, key prefix ${env.TOKENPLACE_RELAY_REDIS_KEY_PREFIX}`;
    return {
      describe: `${version} (${where})`,
      relayEnv: env,
      pid: server?.proc.pid,
      commandStats: async () => {
        const stats: CommandStats = {};
        for (const m of (await client.info("commandstats")).matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
          stats[m[1]!.toLowerCase()] = { calls: Number(m[2]), usec: Number(m[3]) };
        }
        return stats;
      },
      stop: async () => {
        client.disconnect();
        await server?.stop();
      },
    };
  } catch (err) {
    client.disconnect();
    await server?.stop();
    throw err;
  }
}

/**
 * Requests the relay holds right now on routes whose template ends with `routeSuffix`, from its
 * `tokenplace_relay_long_polls_waiting` gauge: the bench posts a wake-up only once the poll it
 * should wake is confirmed held, so every sample is a wake and never an immediate answer.
 */
export async function heldOn(relay: string, routeSuffix: string): Promise<number> {
  const res = await fetch(`${relay}/metrics`, { signal: AbortSignal.timeout(5_000) });
  const text = await res.text();
  // Fail fast rather than wait out every sample for a gauge that cannot be read.
  if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}: the bench reads tokenplace_relay_long_polls_waiting there`);
  if (!text.includes("tokenplace_relay_long_polls_waiting")) throw new Error("GET /metrics has no tokenplace_relay_long_polls_waiting gauge");
  let held = 0;
  for (const m of text.matchAll(/^tokenplace_relay_long_polls_waiting\{([^}]*)\} (\S+)$/gm)) {
    const route = /route="([^"]*)"/.exec(m[1]!)?.[1] ?? "";
    if (route.endsWith(routeSuffix)) held += Number(m[2]);
  }
  return held;
}
