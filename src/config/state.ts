import * as D from "./defaults.ts";
import type { EnvReader } from "./env-reader.ts";

export interface StateConfig {
  backend: "memory" | "redis";
  redis?: { url: string; keyPrefix: string; commandTimeoutMs: number };
}

/** Key prefixes stay plain: `{` `}` would collide with the stores' own cluster hash tags. */
const KEY_PREFIX = /^[A-Za-z0-9._:-]{1,64}$/;

export function loadStateConfig(r: EnvReader): StateConfig {
  const backend = r.oneOf("TOKENPLACE_RELAY_STATE_BACKEND", ["memory", "redis"], "memory");
  const url = r.raw("TOKENPLACE_RELAY_REDIS_URL");
  const keyPrefix = r.string("TOKENPLACE_RELAY_REDIS_KEY_PREFIX", D.DEFAULT_REDIS_KEY_PREFIX);
  const commandTimeoutMs = r.int("RELAY_REDIS_COMMAND_TIMEOUT_MS", D.DEFAULT_REDIS_COMMAND_TIMEOUT_MS, { min: 100, max: 30_000 });
  if (!KEY_PREFIX.test(keyPrefix)) r.problem(`TOKENPLACE_RELAY_REDIS_KEY_PREFIX: 1-64 characters of A-Z a-z 0-9 . _ : - (got ${JSON.stringify(keyPrefix)})`);
  if (r.isBlank("TOKENPLACE_RELAY_REDIS_URL")) r.problem("TOKENPLACE_RELAY_REDIS_URL: set but empty");
  if (backend === "memory") {
    // Settings for a backend that is not used are a mistake, not a no-op: say so.
    if (url !== undefined) r.problem("TOKENPLACE_RELAY_REDIS_URL is set but TOKENPLACE_RELAY_STATE_BACKEND is not redis");
    return { backend };
  }
  if (url === undefined) {
    r.problem("TOKENPLACE_RELAY_REDIS_URL: required with TOKENPLACE_RELAY_STATE_BACKEND=redis (redis://[user:password@]host:port/db or rediss://...)");
    return { backend, redis: { url: "redis://127.0.0.1:6379", keyPrefix, commandTimeoutMs } };
  }
  const problem = redisUrlProblem(url);
  if (problem) r.problem(`TOKENPLACE_RELAY_REDIS_URL: ${problem}`);
  return { backend, redis: { url, keyPrefix, commandTimeoutMs } };
}

/** Why a Redis URL cannot work, without echoing it (it may carry a password). */
function redisUrlProblem(raw: string): string | undefined {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return "not a valid URL (expected redis://[user:password@]host:port/db)";
  }
  if (u.protocol !== "redis:" && u.protocol !== "rediss:") return `scheme must be redis:// or rediss://, got ${u.protocol}//`;
  if (!u.hostname) return "no host";
  if (u.port && (Number(u.port) < 1 || Number(u.port) > 65535)) return "port out of range";
  const db = u.pathname.replace(/^\//, "");
  if (db !== "" && !/^\d{1,2}$/.test(db)) return `database must be a number (the path /N), got ${JSON.stringify(db)}`;
  if (u.search || u.hash) return "must not carry a query or fragment";
  return undefined;
}
