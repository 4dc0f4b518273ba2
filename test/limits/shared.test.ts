/**
 * Two relay processes on one redis-server enforce ONE limit: the counters live in the datastore
 * under TOKENPLACE_RELAY_REDIS_KEY_PREFIX, next to the state. Real processes (from source), a real
 * redis-server, real sockets. Should the datastore go away, each relay keeps counting in its own
 * memory rather than letting everything through.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import Redis from "ioredis";
import { fakeKey } from "../helpers/relay.ts";
import { redisSkipReason, startRedis, type RedisServer } from "../helpers/redis.ts";
import { spawnRelay, type Spawned } from "../helpers/spawn.ts";
import { NODE_CAPS } from "../v1/helpers.ts";

const TOKEN = "shared-limit-token-0123456789";
const skip = redisSkipReason("test/limits/shared.test.ts");

const post = (base: string, path: string, body: unknown = {}, headers: Record<string, string> = {}) =>
  fetch(`${base}${path}`, { method: "POST", headers: { "Content-Type": "application/json", ...headers }, body: JSON.stringify(body) });
const status = async (p: Promise<Response>) => (await p).status;

describe.skipIf(skip !== undefined)("rate limits shared by relays on one datastore", () => {
  let redis: RedisServer;
  const relays: Spawned[] = [];
  let prefixSeq = 0;
  const start = async (prefix: string, extra: Record<string, string> = {}) => {
    const relay = await spawnRelay({
      TOKENPLACE_RELAY_ONLY: "true",
      TOKENPLACE_RELAY_STATE_BACKEND: "redis",
      TOKENPLACE_RELAY_REDIS_URL: `${redis.url}/0`,
      TOKENPLACE_RELAY_REDIS_KEY_PREFIX: prefix,
      TOKEN_PLACE_RELAY_SERVER_TOKEN: TOKEN,
      TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS: "0",
      RELAY_V1_RETRIEVE_HOLD_MS: "0",
      LOG_LEVEL: "warn",
      ...extra,
    });
    relays.push(relay);
    return relay;
  };
  const pair = async (extra: Record<string, string>) => {
    const prefix = `rl-test-${++prefixSeq}:`;
    return { prefix, a: await start(prefix, extra), b: await start(prefix, extra) };
  };
  beforeAll(async () => {
    redis = await startRedis({ persist: false });
  });
  afterEach(() => {
    for (const r of relays.splice(0)) r.kill("SIGKILL");
  });
  afterAll(async () => {
    await redis.stop();
  });

  test("parallel guesses arriving together (one batch of sockets, counters in the datastore) are compared at most up to the limit", async () => {
    const { openRaw, postHead } = await import("../helpers/raw-socket.ts");
    const { a } = await pair({ RELAY_AUTH_FAILURE_LIMIT: "3/minute" });
    const port = Number(new URL(a.url).port);
    const conns = await Promise.all(Array.from({ length: 200 }, () => openRaw(port)));
    try {
      const body = "{}";
      // Every socket connected first, then every request written in one go: the relay reads them
      // in one batch, and each waits on the datastore before any failure has been counted there.
      for (const c of conns) c.send(postHead("/api/v1/relay/servers/poll", body.length, "X-Relay-Server-Token: guess-guess-guess-guess\r\n") + body);
      const statuses = (await Promise.all(conns.map((c) => c.reply(15_000)))).map((x) => x.status);
      expect(statuses.filter((s) => s === 401).length).toBeLessThanOrEqual(3);
      expect(statuses.filter((s) => s !== 401 && s !== 429)).toEqual([]);
    } finally {
      for (const c of conns) c.destroy();
    }
  });

  test("the public quota is one budget over both relays; another key prefix is another relay", async () => {
    const { prefix, a, b } = await pair({ API_RATE_LIMIT: "4/hour" });
    for (const r of [a, b, a, b]) expect(await status(post(r.url, "/api/v1/relay/requests"))).toBe(400);
    const refused = await post(a.url, "/api/v1/relay/requests");
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(3590);
    expect(((await refused.json()) as any).error).toMatchObject({ type: "rate_limit_error", code: "rate_limit_exceeded", param: null });
    expect(await status(post(b.url, "/api/v1/relay/requests"))).toBe(429);

    // Counter keys live under the prefix and never carry an address in the clear.
    const client = new Redis(`${redis.url}/0`);
    try {
      const keys = await client.keys(`${prefix}rl:*`);
      expect(keys.length).toBeGreaterThan(0);
      expect(keys.join("\n")).not.toContain("127.0.0.1");
    } finally {
      client.disconnect();
    }

    const elsewhere = await start(`rl-test-${++prefixSeq}:`, { API_RATE_LIMIT: "4/hour" });
    expect(await status(post(elsewhere.url, "/api/v1/relay/requests"))).toBe(400);
  }, 30_000);

  test("a node's identity bucket and the auth-failure bucket are shared too", async () => {
    const { a, b } = await pair({ API_RELAY_CONTROL_PLANE_POLL_RATE_LIMIT: "2/hour", RELAY_AUTH_FAILURE_LIMIT: "2/minute" });
    const auth = { "X-Relay-Server-Token": TOKEN };
    const node = fakeKey("node");
    expect(await status(post(a.url, "/api/v1/relay/servers/register", { server_public_key: node, capabilities: NODE_CAPS }, auth))).toBe(200);
    expect(await status(post(a.url, "/api/v1/relay/servers/poll", { server_public_key: node }, auth))).toBe(200);
    expect(await status(post(b.url, "/api/v1/relay/servers/poll", { server_public_key: node }, auth))).toBe(200);
    expect(await status(post(a.url, "/api/v1/relay/servers/poll", { server_public_key: node }, auth))).toBe(429);

    const wrong = { "X-Relay-Server-Token": "guess-guess-guess-guess" };
    expect(await status(post(a.url, "/api/v1/relay/servers/register", {}, wrong))).toBe(401);
    expect(await status(post(b.url, "/api/v1/relay/servers/register", {}, wrong))).toBe(401);
    expect(await status(post(a.url, "/api/v1/relay/servers/register", {}, wrong))).toBe(429);
    expect(await status(post(b.url, "/api/v1/relay/servers/register", { server_public_key: fakeKey(), capabilities: NODE_CAPS }, auth))).toBe(429);
  }, 30_000);

  test("failures on relay A are refused on relay B, which failed nothing itself, and on a relay started after them", async () => {
    // While a replica has heard of no failure within the window it reads no failure counter: B
    // learns of A's failures only from A's announcement (without it, B would compare the right
    // token and answer 200), and C, started later, from the marker every failure renews.
    const extra = { RELAY_AUTH_FAILURE_LIMIT: "2/minute" };
    const { prefix, a, b } = await pair(extra);
    const auth = { "X-Relay-Server-Token": TOKEN };
    const register = { server_public_key: fakeKey(), capabilities: NODE_CAPS };
    expect(await status(post(b.url, "/api/v1/relay/servers/register", register, auth))).toBe(200);
    const wrong = { "X-Relay-Server-Token": "guess-guess-guess-guess" };
    expect(await status(post(a.url, "/api/v1/relay/servers/register", {}, wrong))).toBe(401);
    expect(await status(post(a.url, "/api/v1/relay/servers/register", {}, wrong))).toBe(401);
    expect(await status(post(b.url, "/api/v1/relay/servers/register", register, auth))).toBe(429);
    const c = await start(prefix, extra);
    // Ready means subscribed and caught up on earlier failures (src/state/backend.ts).
    for (let i = 0; (await fetch(`${c.url}/healthz`)).status !== 200; i++) {
      if (i > 500) throw new Error("relay C never became ready");
      await Bun.sleep(10);
    }
    expect(await status(post(c.url, "/api/v1/relay/servers/register", register, auth))).toBe(429);
  }, 30_000);

  test("with the datastore down each relay counts on in its own memory: guessing stays limited", async () => {
    const { a } = await pair({ RELAY_AUTH_FAILURE_LIMIT: "2/minute", API_RATE_LIMIT: "2/hour" });
    await redis.kill();
    try {
      const wrong = { "X-Relay-Server-Token": "guess-guess-guess-guess" };
      expect(await status(post(a.url, "/api/v1/relay/servers/poll", {}, wrong))).toBe(401);
      expect(await status(post(a.url, "/api/v1/relay/servers/poll", {}, wrong))).toBe(401);
      expect(await status(post(a.url, "/api/v1/relay/servers/poll", {}, wrong))).toBe(429);
      // A quota-limited route that needs state answers what the outage makes it answer (503), then 429.
      const first = await post(a.url, "/api/v1/relay/requests", { server_public_key: fakeKey(), client_public_key: fakeKey(), chat_history: "YQ==", cipherkey: "aw==", iv: "aQ==" });
      expect(first.status).toBe(503);
      expect(await status(post(a.url, "/api/v1/relay/requests"))).toBe(400);
      expect(await status(post(a.url, "/api/v1/relay/requests"))).toBe(429);
    } finally {
      await redis.start();
    }
  }, 30_000);
});
