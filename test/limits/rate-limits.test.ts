/**
 * Rate limits over real HTTP (token.place API v1 relay spec §11, 429 shape §2), in-process relays
 * with the in-memory counters. Every test starts its own relay, so counters start at zero; all
 * requests come from 127.0.0.1 unless a trusted proxy (the test, via X-Forwarded-For) names
 * another client.
 *
 * Time: rate-limiter-flexible reads Date.now(), which bun:test's setSystemTime moves, so a window
 * of an hour is crossed without sleeping.
 */
import { afterEach, describe, expect, setSystemTime, test } from "bun:test";
import { fakeKey, startTestRelay, type TestRelay } from "../helpers/relay.ts";
import { NODE_CAPS, rid, v1Peers } from "../v1/helpers.ts";

const TOKEN = "rate-limit-test-token-0123456789";
const AUTH = { "X-Relay-Server-Token": TOKEN };
const started: TestRelay[] = [];
afterEach(async () => {
  setSystemTime();
  await Promise.all(started.splice(0).map((r) => r.shutdown()));
});

/** A relay for one test: no holds (polls and retrieves answer at once). */
function relay(env: Record<string, string> = {}): TestRelay {
  const r = startTestRelay({ TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS: "0", RELAY_V1_RETRIEVE_HOLD_MS: "0", ...env });
  started.push(r);
  return r;
}

const post = (r: TestRelay, path: string, body: unknown = {}, headers: Record<string, string> = {}) => r.post(path, body, headers);

/** The 429 of spec §2: the rate-limit body shape and an integer Retry-After of at least 1 s. */
async function expectLimited(res: Response, limitText: string, maxRetryAfter: number) {
  expect(res.status).toBe(429);
  const retryAfter = res.headers.get("retry-after");
  expect(retryAfter).toMatch(/^\d+$/);
  expect(Number(retryAfter)).toBeGreaterThanOrEqual(1);
  expect(Number(retryAfter)).toBeLessThanOrEqual(maxRetryAfter);
  expect(res.headers.get("content-type")).toContain("application/json");
  expect(await res.json()).toEqual({
    error: { message: `Rate limit exceeded: ${limitText}. Try again in ${retryAfter} seconds.`, type: "rate_limit_error", code: "rate_limit_exceeded", param: null },
  });
  return Number(retryAfter);
}

const envelope = (serverKey: string, clientKey = fakeKey("client")) => ({
  server_public_key: serverKey,
  client_public_key: clientKey,
  chat_history: "Y2lwaGVydGV4dA==",
  cipherkey: "a2V5",
  iv: "aXY=",
  request_id: rid(),
});

describe("public quota (API_RATE_LIMIT, API_DAILY_QUOTA): per client address and route", () => {
  test("requests and requests/cancel answer 429 past the limit, each route with its own bucket, with CORS", async () => {
    const r = relay({ API_RATE_LIMIT: "3/hour" });
    const node = await v1Peers(r).register();
    for (let i = 0; i < 3; i++) expect((await post(r, "/api/v1/relay/requests", envelope(node.key))).status).toBe(200);
    const refused = await post(r, "/api/v1/relay/requests", envelope(node.key));
    // Browsers must be able to read Retry-After on the client routes.
    expect(refused.headers.get("access-control-allow-origin")).toBe("*");
    expect(refused.headers.get("access-control-expose-headers")).toBe("Retry-After");
    expect(refused.headers.get("x-request-id")).toBeTruthy();
    await expectLimited(refused, "3 per 1 hour", 3600);
    // Refused requests were not queued.
    const diagnostics = (await (await r.get("/relay/diagnostics")).json()) as { registered_compute_nodes: { queue_depth: number }[] };
    expect(diagnostics.registered_compute_nodes[0]!.queue_depth).toBe(3);

    // requests/cancel counts on its own (upstream's Flask-Limiter default limits are per route).
    for (let i = 0; i < 3; i++) expect((await post(r, "/api/v1/relay/requests/cancel", { client_public_key: fakeKey(), request_id: rid() })).status).not.toBe(429);
    await expectLimited(await post(r, "/api/v1/relay/requests/cancel", {}), "3 per 1 hour", 3600);
  });

  test("the daily quota is a second bucket: whichever is spent first refuses", async () => {
    const r = relay({ API_RATE_LIMIT: "100/hour", API_DAILY_QUOTA: "2/day" });
    expect((await post(r, "/api/v1/relay/requests", envelope(fakeKey()))).status).toBe(404);
    expect((await post(r, "/api/v1/relay/requests", envelope(fakeKey()))).status).toBe(404);
    const retryAfter = await expectLimited(await post(r, "/api/v1/relay/requests", envelope(fakeKey())), "2 per 1 day", 86_400);
    expect(retryAfter).toBeGreaterThan(3600);
  });

  test("a window ends on time (injected clock), and Retry-After counts down to it", async () => {
    const t0 = Date.now();
    setSystemTime(t0);
    const r = relay({ API_RATE_LIMIT: "2/hour" });
    for (let i = 0; i < 2; i++) expect((await post(r, "/api/v1/relay/requests", {})).status).toBe(400);
    expect(await expectLimited(await post(r, "/api/v1/relay/requests", {}), "2 per 1 hour", 3600)).toBeGreaterThanOrEqual(3599);
    setSystemTime(t0 + 30 * 60_000);
    const left = await expectLimited(await post(r, "/api/v1/relay/requests", {}), "2 per 1 hour", 3600);
    expect(left).toBeGreaterThanOrEqual(1799);
    expect(left).toBeLessThanOrEqual(1800);
    setSystemTime(t0 + 60 * 60_000 + 1_000);
    expect((await post(r, "/api/v1/relay/requests", {})).status).toBe(400);
    expect((await post(r, "/api/v1/relay/requests", {})).status).toBe(400);
    expect((await post(r, "/api/v1/relay/requests", {})).status).toBe(429);
  });

  test("exempt, as upstream: probes, metrics, diagnostics, meta/version, preflights, servers/next, responses/retrieve, node routes", async () => {
    const r = relay({ API_RATE_LIMIT: "1/hour", API_DAILY_QUOTA: "1/day" });
    expect((await post(r, "/api/v1/relay/requests", {})).status).toBe(400);
    expect((await post(r, "/api/v1/relay/requests", {})).status).toBe(429);
    const peers = v1Peers(r);
    for (let i = 0; i < 3; i++) {
      for (const path of ["/livez", "/healthz", "/metrics", "/relay/diagnostics", "/api/v1/meta", "/api/v1/version", "/api/v1/relay/servers/next"]) {
        expect((await r.get(path)).status).not.toBe(429);
      }
      const preflight = await fetch(`${r.url}/api/v1/relay/requests`, { method: "OPTIONS" });
      expect(preflight.status).toBe(204);
      expect((await peers.retrieve(fakeKey(), rid())).status).not.toBe(429);
      const node = await peers.register();
      expect((await peers.poll(node.key)).status).toBe(200);
    }
  });

  test("legacy /faucet is limited when the legacy routes are on; off, it answers 410 before any limit", async () => {
    const on = relay({ TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES: "true", API_RATE_LIMIT: "2/hour" });
    for (let i = 0; i < 2; i++) expect((await post(on, "/faucet", {})).status).toBe(400);
    await expectLimited(await post(on, "/faucet", {}), "2 per 1 hour", 3600);
    const off = relay({ API_RATE_LIMIT: "1/hour" });
    for (let i = 0; i < 3; i++) expect((await post(off, "/faucet", {})).status).toBe(410);
  });

  test("RELAY_RATE_LIMITS=off turns the quotas off", async () => {
    const r = relay({ RELAY_RATE_LIMITS: "off", API_RATE_LIMIT: "1/hour", API_RELAY_CONTROL_PLANE_IP_RATE_LIMIT: "1/hour" });
    for (let i = 0; i < 4; i++) {
      expect((await post(r, "/api/v1/relay/requests", {})).status).toBe(400);
      expect((await post(r, "/api/v1/relay/servers/poll", {})).status).toBe(400);
    }
  });
});

describe("control-plane quota: per route per address, and per route per node identity", () => {
  const CONTROL_ROUTES = [
    "/api/v1/relay/servers/register",
    "/api/v1/relay/servers/poll",
    "/api/v1/relay/servers/control",
    "/api/v1/relay/servers/unregister",
    "/unregister",
    "/api/v1/relay/responses",
    "/api/v1/relay/progress",
  ];

  test("every node route answers 429 past API_RELAY_CONTROL_PLANE_IP_RATE_LIMIT, before the token check", async () => {
    const r = relay({ TOKEN_PLACE_RELAY_SERVER_TOKEN: TOKEN, API_RELAY_CONTROL_PLANE_IP_RATE_LIMIT: "2/hour", RELAY_AUTH_FAILURE_LIMIT: "1000/minute" });
    for (const path of CONTROL_ROUTES.filter((p) => p !== "/unregister")) {
      // A wrong token is charged too (the limit runs first, as upstream's before_request).
      expect((await post(r, path, {}, AUTH)).status).toBe(400);
      expect((await post(r, path, {}, { "X-Relay-Server-Token": "wrong-token-wrong-token" })).status).toBe(401);
      await expectLimited(await post(r, path, {}, AUTH), "2 per 1 hour", 3600);
    }
    // The legacy alias draws on servers/unregister's quota, already spent.
    await expectLimited(await post(r, "/unregister", {}, AUTH), "2 per 1 hour", 3600);
  });

  test("with a registration token, each node key has its own bucket; a 429 from it costs the address nothing", async () => {
    const r = relay({
      TOKEN_PLACE_RELAY_SERVER_TOKEN: TOKEN,
      API_RELAY_CONTROL_PLANE_POLL_RATE_LIMIT: "2/hour",
      API_RELAY_CONTROL_PLANE_IP_RATE_LIMIT: "5/hour",
    });
    const peers = v1Peers(r, TOKEN);
    const [a, b, c] = [await peers.register(), await peers.register(), await peers.register()];
    expect((await peers.poll(a.key)).status).toBe(200);
    expect((await peers.poll(a.key)).status).toBe(200);
    const refused = await post(r, "/api/v1/relay/servers/poll", { server_public_key: a.key, capabilities: NODE_CAPS }, AUTH);
    await expectLimited(refused, "2 per 1 hour", 3600);
    // No CORS on node routes.
    expect(refused.headers.get("access-control-allow-origin")).toBeNull();
    // Node b, same address: its own bucket; and a's refused poll was given back to the address,
    // so the address's fifth poll is c's first, and its sixth the first the address bucket refuses.
    expect((await peers.poll(b.key)).status).toBe(200);
    expect((await peers.poll(b.key)).status).toBe(200);
    expect((await peers.poll(c.key)).status).toBe(200);
    await expectLimited(await post(r, "/api/v1/relay/servers/poll", { server_public_key: c.key }, AUTH), "5 per 1 hour", 3600);
    // servers/register has buckets of its own (route by route, as upstream).
    expect((await peers.call("servers/register", { server_public_key: a.key, capabilities: NODE_CAPS }, AUTH)).status).toBe(200);
  });

  test("without a registration token only the address bucket applies to register and poll (upstream)", async () => {
    const r = relay({ API_RELAY_CONTROL_PLANE_POLL_RATE_LIMIT: "1/hour", API_RELAY_CONTROL_PLANE_REGISTER_RATE_LIMIT: "1/hour" });
    const peers = v1Peers(r);
    const a = await peers.register();
    await peers.register(a.key);
    for (let i = 0; i < 3; i++) expect((await peers.poll(a.key)).status).toBe(200);
  });

  test("servers/control and progress: charged per node only once the control credential checks out", async () => {
    const r = relay({ API_RELAY_CONTROL_PLANE_CONTROL_RATE_LIMIT: "2/hour", API_RELAY_CONTROL_PLANE_PROGRESS_RATE_LIMIT: "1/hour" });
    const peers = v1Peers(r);
    const node = await peers.register();
    const other = await peers.register();
    // Anyone without the credential cannot spend the node's bucket...
    for (let i = 0; i < 4; i++) expect((await peers.control(node.key, "not-the-credential", rid())).status).toBe(403);
    // ...the owner can: two polls, then 429 for everybody asking about this node.
    expect((await peers.control(node.key, node.credential, rid())).status).toBe(200);
    expect((await peers.control(node.key, node.credential, rid())).status).toBe(200);
    await expectLimited(await post(r, "/api/v1/relay/servers/control", { server_public_key: node.key, request_id: rid(), control_credential: node.credential }), "2 per 1 hour", 3600);
    expect((await peers.control(other.key, other.credential, rid())).status).toBe(200);

    for (let i = 0; i < 3; i++) expect((await peers.progress(node.key, "wrong-credential", fakeKey(), rid())).status).toBe(403);
    expect((await peers.progress(node.key, node.credential, fakeKey(), rid())).status).toBe(410);
    const res = await post(r, "/api/v1/relay/progress", {
      server_public_key: node.key, client_public_key: fakeKey(), request_id: rid(), control_credential: node.credential,
      protocol: "tokenplace_api_v1_relay_e2ee", version: 1, ciphertext: "cA==", cipherkey: "aw==", iv: "aQ==",
    });
    await expectLimited(res, "1 per 1 hour", 3600);
  });

  test("servers/unregister: charged per node when the token matched and the credential removed it", async () => {
    const r = relay({ TOKEN_PLACE_RELAY_SERVER_TOKEN: TOKEN, API_RELAY_CONTROL_PLANE_UNREGISTER_RATE_LIMIT: "1/hour" });
    const peers = v1Peers(r, TOKEN);
    const a = await peers.register();
    for (let i = 0; i < 3; i++) expect((await peers.unregister(a.key, "wrong")).status).toBe(403);
    expect((await peers.unregister(a.key, a.credential)).status).toBe(200);
    const again = await peers.register(a.key);
    await expectLimited(
      await post(r, "/api/v1/relay/servers/unregister", { server_public_key: a.key, control_credential: again.credential }, AUTH),
      "1 per 1 hour",
      3600,
    );
    // The alias shares the route's quota.
    expect((await post(r, "/unregister", { server_public_key: a.key, control_credential: again.credential }, AUTH)).status).toBe(429);
  });

  test("responses: the bucket of the client key of a well-formed envelope; malformed bodies charge no victim", async () => {
    const r = relay({ TOKEN_PLACE_RELAY_SERVER_TOKEN: TOKEN, API_RELAY_CONTROL_PLANE_RESPONSE_RATE_LIMIT: "1/hour" });
    const peers = v1Peers(r, TOKEN);
    const victim = fakeKey("client");
    for (let i = 0; i < 3; i++) expect((await peers.respond(victim, rid(), { iv: undefined })).status).toBe(400);
    expect((await peers.respond(victim, rid())).status).not.toBe(429);
    await expectLimited((await post(r, "/api/v1/relay/responses", { client_public_key: victim, chat_history: "YQ==", cipherkey: "aw==", iv: "aQ==" }, AUTH)), "1 per 1 hour", 3600);
    expect((await peers.respond(fakeKey("client"), rid())).status).not.toBe(429);
  });
});

describe("client identity: spoofed X-Forwarded-For is ignored unless the peer is a trusted proxy", () => {
  const spoofed = (r: TestRelay, xff: string) => post(r, "/api/v1/relay/requests", {}, { "X-Forwarded-For": xff });

  test("trust off (the default): one bucket for the socket address, whatever the header says", async () => {
    const r = relay({ API_RATE_LIMIT: "2/hour" });
    expect((await spoofed(r, "203.0.113.1")).status).toBe(400);
    expect((await spoofed(r, "203.0.113.2")).status).toBe(400);
    expect((await spoofed(r, "203.0.113.3")).status).toBe(429);
  });

  test("trust on, but the peer is not a trusted proxy: still the socket address", async () => {
    const r = relay({ API_RATE_LIMIT: "2/hour", RELAY_PROXY_TRUST_FORWARDED: "true", RELAY_TRUSTED_PROXY_CIDRS: "10.0.0.0/8" });
    expect((await spoofed(r, "203.0.113.1")).status).toBe(400);
    expect((await spoofed(r, "203.0.113.2")).status).toBe(400);
    expect((await spoofed(r, "203.0.113.3")).status).toBe(429);
  });

  test("behind a trusted proxy: the address the proxy appended, never one the client prepended", async () => {
    const r = relay({ API_RATE_LIMIT: "2/hour", RELAY_PROXY_TRUST_FORWARDED: "true", RELAY_TRUSTED_PROXY_CIDRS: "127.0.0.1/32" });
    // Distinct clients: distinct buckets.
    for (const client of ["203.0.113.1", "203.0.113.2", "203.0.113.3"]) expect((await spoofed(r, client)).status).toBe(400);
    // One client rotating what it writes on the left stays one client.
    expect((await spoofed(r, "1.1.1.1, 198.51.100.7")).status).toBe(400);
    expect((await spoofed(r, "2.2.2.2, 198.51.100.7")).status).toBe(400);
    await expectLimited(await spoofed(r, "3.3.3.3, 198.51.100.7"), "2 per 1 hour", 3600);
    // IPv6 clients are counted by /64.
    expect((await spoofed(r, "2001:db8:1:2::1")).status).toBe(400);
    expect((await spoofed(r, "2001:db8:1:2::2")).status).toBe(400);
    expect((await spoofed(r, "2001:db8:1:2::3")).status).toBe(429);
  });
});

describe("failed registration-token attempts (RELAY_AUTH_FAILURE_LIMIT): per address, all node routes together", () => {
  const env = { TOKEN_PLACE_RELAY_SERVER_TOKEN: TOKEN, RELAY_AUTH_FAILURE_LIMIT: "3/minute", RELAY_PROXY_TRUST_FORWARDED: "true", RELAY_TRUSTED_PROXY_CIDRS: "127.0.0.1/32" };
  const wrong = { "X-Relay-Server-Token": "guess-guess-guess-guess" };

  test("right tokens cost nothing; past the limit of failures every node route from the address answers 429, even with the right token", async () => {
    const r = relay(env);
    const peers = v1Peers(r, TOKEN);
    const node = await peers.register();
    for (let i = 0; i < 5; i++) expect((await peers.poll(node.key)).status).toBe(200);
    expect((await post(r, "/api/v1/relay/servers/poll", {}, wrong)).status).toBe(401);
    expect((await post(r, "/api/v1/relay/servers/register", {}, {})).status).toBe(401);
    expect((await post(r, "/api/v1/relay/responses", {}, wrong)).status).toBe(401);
    await expectLimited(await post(r, "/api/v1/relay/progress", {}, wrong), "3 per 1 minute", 60);
    // The right token no longer tells the guesser anything: 429 too, until the window ends.
    await expectLimited(await post(r, "/api/v1/relay/servers/poll", { server_public_key: node.key }, AUTH), "3 per 1 minute", 60);
    // Another client (named by the trusted proxy) is not affected; nor are client routes.
    expect((await post(r, "/api/v1/relay/servers/poll", { server_public_key: node.key }, { ...AUTH, "X-Forwarded-For": "203.0.113.50" })).status).toBe(200);
    expect((await post(r, "/api/v1/relay/servers/poll", {}, { ...wrong, "X-Forwarded-For": "203.0.113.50" })).status).toBe(401);
    expect((await post(r, "/api/v1/relay/requests", {})).status).toBe(400);
  });

  test("a node running many requests at once with the right token is never limited by them", async () => {
    const r = relay(env);
    const peers = v1Peers(r, TOKEN);
    const results = await Promise.all(Array.from({ length: 30 }, () => peers.register().then(() => 200, () => 0)));
    expect(results.every((s) => s === 200)).toBe(true);
  });

  test("a burst of parallel guesses gets no further than the limit", async () => {
    const r = relay(env);
    const statuses = await Promise.all(Array.from({ length: 20 }, () => post(r, "/api/v1/relay/servers/poll", {}, wrong).then((res) => res.status)));
    expect(statuses.filter((s) => s === 401).length).toBe(3);
    expect(statuses.filter((s) => s === 429).length).toBe(17);
  });

  test("the window ends: guessing resumes at the limit's pace only", async () => {
    const t0 = Date.now();
    setSystemTime(t0);
    const r = relay(env);
    for (let i = 0; i < 3; i++) expect((await post(r, "/api/v1/relay/servers/poll", {}, wrong)).status).toBe(401);
    expect((await post(r, "/api/v1/relay/servers/poll", {}, wrong)).status).toBe(429);
    setSystemTime(t0 + 61_000);
    expect((await post(r, "/api/v1/relay/servers/poll", {}, wrong)).status).toBe(401);
  });

  test("without a registration token nothing fails, so nothing is limited", async () => {
    const r = relay({ RELAY_AUTH_FAILURE_LIMIT: "1/minute" });
    for (let i = 0; i < 4; i++) expect((await post(r, "/api/v1/relay/servers/poll", {}, wrong)).status).toBe(400);
  });
});

describe("metrics", () => {
  test("a refused POST requests counts as outcome rate_limited; every 429 as rejection rate_limited", async () => {
    const r = relay({ API_RATE_LIMIT: "1/hour", API_RELAY_CONTROL_PLANE_IP_RATE_LIMIT: "1/hour" });
    const scrape = async () => (await r.get("/metrics")).text();
    const value = (text: string, series: string) => Number(new RegExp(`^${series.replace(/[{}"]/g, "\\$&")} (\\S+)$`, "m").exec(text)?.[1] ?? NaN);
    const before = await scrape();
    expect(value(before, 'tokenplace_relay_request_outcomes_total{outcome="rate_limited"}')).toBe(0);
    await post(r, "/api/v1/relay/requests", {});
    expect((await post(r, "/api/v1/relay/requests", {})).status).toBe(429);
    await post(r, "/api/v1/relay/requests/cancel", {});
    expect((await post(r, "/api/v1/relay/requests/cancel", {})).status).toBe(429);
    await post(r, "/api/v1/relay/servers/poll", {});
    expect((await post(r, "/api/v1/relay/servers/poll", {})).status).toBe(429);
    const after = await scrape();
    expect(value(after, 'tokenplace_relay_request_outcomes_total{outcome="rate_limited"}')).toBe(1);
    expect(value(after, 'tokenplace_relay_rejections_total{reason="rate_limited"}')).toBe(3);
  });
});
