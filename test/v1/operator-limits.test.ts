/**
 * The operator route (POST /api/v1/relay/unregister, spec §6.11) over real HTTP: wrong operator
 * tokens are limited per client address like registration tokens (RELAY_AUTH_FAILURE_LIMIT), with
 * a count of their own, and the Bearer scheme is case-insensitive (RFC 7235 §2.1). In-process
 * relays with the in-memory counters; every test starts its own, so counters start at zero.
 */
import { afterAll, afterEach, beforeAll, describe, expect, setSystemTime, test } from "bun:test";
import { redisSkipReason, startRedis, type RedisServer } from "../helpers/redis.ts";
import { startTestRelay, type TestRelay } from "../helpers/relay.ts";
import { spawnRelay, type Spawned } from "../helpers/spawn.ts";
import { v1Peers, type Json } from "./helpers.ts";

const OPERATOR = "operator-token-0123456789";
const NODE_TOKEN = "registration-token-0123456789";
const PATH = "/api/v1/relay/unregister";
const WRONG = { "X-Token-Place-Operator": "guess-guess-guess-guess" };
const started: TestRelay[] = [];
afterEach(async () => {
  setSystemTime();
  await Promise.all(started.splice(0).map((r) => r.shutdown()));
});

function relay(env: Record<string, string> = {}): TestRelay {
  const r = startTestRelay({
    TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS: "0",
    RELAY_V1_RETRIEVE_HOLD_MS: "0",
    TOKEN_PLACE_OPERATOR_TOKEN: OPERATOR,
    TOKEN_PLACE_RELAY_SERVER_TOKEN: NODE_TOKEN,
    RELAY_AUTH_FAILURE_LIMIT: "3/minute",
    RELAY_PROXY_TRUST_FORWARDED: "true",
    RELAY_TRUSTED_PROXY_CIDRS: "127.0.0.1/32",
    ...env,
  });
  started.push(r);
  return r;
}

const unregister = (r: TestRelay, headers: Record<string, string>, key = "no-such-node-key") => r.post(PATH, { server_public_key: key }, headers);
const codeOf = async (res: Response) => ((await res.json()) as Json).error?.code as string | undefined;

describe("operator token failures (RELAY_AUTH_FAILURE_LIMIT, a count of their own)", () => {
  test("past the limit the address gets 429 even with the right token, until the window ends; other addresses do not", async () => {
    const t0 = Date.now();
    setSystemTime(t0);
    const r = relay();
    for (let i = 0; i < 3; i++) {
      const res = await unregister(r, WRONG);
      expect(res.status).toBe(401);
      expect(await codeOf(res)).toBe("operator_token_invalid");
    }
    for (const headers of [WRONG, { "X-Token-Place-Operator": OPERATOR }, {}]) {
      const refused = await unregister(r, headers);
      expect(refused.status).toBe(429);
      expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
      expect(Number(refused.headers.get("retry-after"))).toBeLessThanOrEqual(60);
      expect(await codeOf(refused)).toBe("rate_limit_exceeded");
    }
    // Another client, named by the trusted proxy, still has its own attempts.
    expect((await unregister(r, { ...WRONG, "X-Forwarded-For": "203.0.113.9" })).status).toBe(401);
    expect((await unregister(r, { "X-Token-Place-Operator": OPERATOR, "X-Forwarded-For": "203.0.113.9" })).status).toBe(200);
    setSystemTime(t0 + 61_000);
    expect((await unregister(r, { "X-Token-Place-Operator": OPERATOR })).status).toBe(200);
  });

  test("right tokens cost nothing", async () => {
    const r = relay();
    for (let i = 0; i < 10; i++) expect((await unregister(r, { Authorization: `Bearer ${OPERATOR}` })).status).toBe(200);
  });

  test("a burst of parallel guesses gets no further than the limit", async () => {
    const r = relay();
    const statuses = await Promise.all(Array.from({ length: 20 }, () => unregister(r, WRONG).then((res) => res.status)));
    expect(statuses.filter((s) => s === 401).length).toBe(3);
    expect(statuses.filter((s) => s === 429).length).toBe(17);
  });

  test("operator and registration-token failures are counted apart", async () => {
    const r = relay();
    for (let i = 0; i < 3; i++) expect((await unregister(r, WRONG)).status).toBe(401);
    expect((await unregister(r, WRONG)).status).toBe(429);
    // The nodes at this address are not locked out by the operator route's failures ...
    const peers = v1Peers(r, NODE_TOKEN);
    const node = await peers.register();
    const badNode = { "X-Relay-Server-Token": "wrong-registration-token" };
    for (let i = 0; i < 3; i++) expect((await r.post("/api/v1/relay/servers/poll", {}, badNode)).status).toBe(401);
    expect((await r.post("/api/v1/relay/servers/poll", {}, badNode)).status).toBe(429);
    // ... nor an operator at another address by the nodes' failures there.
    const other = { "X-Forwarded-For": "203.0.113.10" };
    for (let i = 0; i < 3; i++) expect((await r.post("/api/v1/relay/servers/poll", {}, { ...badNode, ...other })).status).toBe(401);
    expect((await unregister(r, { "X-Token-Place-Operator": OPERATOR, ...other }, node.key)).status).toBe(200);
  });

  test("with RELAY_RATE_LIMITS=off the failures are still limited", async () => {
    const r = relay({ RELAY_RATE_LIMITS: "off" });
    for (let i = 0; i < 3; i++) expect((await unregister(r, WRONG)).status).toBe(401);
    expect((await unregister(r, WRONG)).status).toBe(429);
  });
});

describe("the Authorization scheme", () => {
  test("Bearer is matched in any case (RFC 7235 §2.1); other schemes and wrong tokens are refused", async () => {
    const r = relay({ RELAY_AUTH_FAILURE_LIMIT: "100/minute" });
    const node = await v1Peers(r, NODE_TOKEN).register();
    for (const scheme of ["Bearer", "bearer", "BEARER", "bEaReR"]) {
      expect((await unregister(r, { Authorization: `${scheme} ${OPERATOR}` })).status).toBe(200);
    }
    const res = await unregister(r, { Authorization: `bearer ${OPERATOR}` }, node.key);
    expect(await res.json()).toEqual({ message: "Server unregistered", removed: true });
    for (const auth of [`Basic ${OPERATOR}`, `Bearer${OPERATOR}`, "bearer wrong-token-0123456789", `Token ${OPERATOR}`]) {
      expect((await unregister(r, { Authorization: auth })).status).toBe(401);
    }
  });
});

const skipShared = redisSkipReason("test/v1/operator-limits.test.ts");

describe.skipIf(skipShared !== undefined)("operator token failures shared by relays on one datastore", () => {
  let redis: RedisServer;
  const relays: Spawned[] = [];
  beforeAll(async () => {
    redis = await startRedis({ persist: false });
  });
  afterEach(() => {
    for (const r of relays.splice(0)) r.kill("SIGKILL");
  });
  afterAll(async () => {
    await redis.stop();
  });

  test("failures at one replica are refused at the other; its registration-token count is untouched", async () => {
    const env = {
      TOKENPLACE_RELAY_ONLY: "true",
      TOKENPLACE_RELAY_STATE_BACKEND: "redis",
      TOKENPLACE_RELAY_REDIS_URL: `${redis.url}/0`,
      TOKENPLACE_RELAY_REDIS_KEY_PREFIX: "operator-limits-test:",
      TOKEN_PLACE_OPERATOR_TOKEN: OPERATOR,
      TOKEN_PLACE_RELAY_SERVER_TOKEN: NODE_TOKEN,
      RELAY_AUTH_FAILURE_LIMIT: "3/minute",
      LOG_LEVEL: "warn",
    };
    const a = await spawnRelay(env);
    relays.push(a);
    const b = await spawnRelay(env);
    relays.push(b);
    const post = (base: string, path: string, headers: Record<string, string>) =>
      fetch(`${base}${path}`, { method: "POST", headers: { "Content-Type": "application/json", ...headers }, body: JSON.stringify({ server_public_key: "no-such-node-key" }) });
    for (let i = 0; i < 3; i++) expect((await post(a.url, PATH, WRONG)).status).toBe(401);
    expect((await post(b.url, PATH, { "X-Token-Place-Operator": OPERATOR })).status).toBe(429);
    expect((await post(b.url, "/api/v1/relay/servers/poll", { "X-Relay-Server-Token": "wrong-registration-token" })).status).toBe(401);
  });
});
