// Which routes exist: the legacy switch (spec §12), and the relay's own namespace winning over the
// proxy prefixes, so nothing under /api/v1/relay/ ever reaches the GPU upstream.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Server } from "bun";
import { createProxyRoute } from "../../src/proxy/index.ts";
import { RELAY_ROUTE_SPECS } from "../../src/routes.ts";
import { fakeKey, job, startLegacyRelay, startTestRelay, type TestRelay } from "../helpers/relay.ts";
import { rawGet, rawRequest } from "../proxy/helpers.ts";

const LEGACY = RELAY_ROUTE_SPECS.filter((r) => r.legacy);

describe("legacy routes off (the default, as upstream)", () => {
  let relay: TestRelay;
  beforeAll(() => {
    relay = startTestRelay({ RELAY_LONG_POLL_MS: "0" });
  });
  afterAll(() => relay.shutdown());

  test("the switch covers exactly upstream's five routes", () => {
    expect(LEGACY.map((r) => r.path).sort()).toEqual(["/faucet", "/next_server", "/retrieve", "/sink", "/source"]);
  });

  for (const route of LEGACY) {
    test(`${route.method} ${route.path}: JSON 410 legacy_relay_endpoint_deprecated, before auth or body checks`, async () => {
      const res = await fetch(relay.url + route.path, { method: route.method, body: route.method === "POST" ? "not json" : undefined });
      expect(res.status).toBe(410);
      expect(await res.json()).toEqual({
        error: {
          message: `Legacy relay endpoint '${route.path}' is deprecated. Use API v1 relay E2EE routes.`,
          code: "legacy_relay_endpoint_deprecated",
          deprecated: true,
        },
      });
    });
  }

  test("the stream routes stay served (upstream serves them always)", async () => {
    const source = await relay.post("/stream/source", { session_id: "nope", chunk: {} });
    expect(source.status).toBe(404);
    expect(await source.json()).toEqual({ error: "Unknown stream session" });
    const retrieve = await relay.post("/stream/retrieve", { client_public_key: fakeKey() });
    expect(await retrieve.json()).toEqual({ error: "No active stream for the given public key" });
  });
});

describe("legacy routes on", () => {
  test("the legacy protocol works, and its state is apart from API v1's", async () => {
    const relay = startLegacyRelay({ RELAY_LONG_POLL_MS: "0", TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS: "0" });
    try {
      const key = fakeKey("node");
      expect((await relay.post("/sink", { server_public_key: key })).status).toBe(200);
      expect((await relay.post("/faucet", job(key))).status).toBe(200);
      // The same key is not an API v1 node: v1 routes neither see nor steal its legacy work.
      expect((await relay.post("/api/v1/relay/servers/poll", { server_public_key: key })).status).toBe(404);
      const sink = (await (await relay.post("/sink", { server_public_key: key })).json()) as Record<string, unknown>;
      expect(sink.chat_history).toBe("Y2lwaGVydGV4dA==");
    } finally {
      await relay.shutdown();
    }
  });
});

/** A relay in proxy mode in front of an upstream that records every path it receives. */
function withRecordingUpstream() {
  const seen: string[] = [];
  let upstream: Server<undefined>;
  const ctx = { seen, relay: undefined as unknown as TestRelay };
  beforeAll(() => {
    upstream = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: (req) => (seen.push(new URL(req.url).pathname), Response.json({ from: "upstream" })) });
    ctx.relay = startTestRelay(
      { TOKENPLACE_RELAY_ONLY: "false", TOKENPLACE_RELAY_UPSTREAM_URL: `http://127.0.0.1:${upstream.port}` },
      { proxy: (d) => createProxyRoute({ ...d, probe: false, env: {} }) },
    );
  });
  afterAll(async () => {
    await ctx.relay.shutdown();
    upstream.stop(true);
  });
  return ctx;
}

describe("relay routes win over proxy prefixes", () => {
  const ctx = withRecordingUpstream();
  const { seen } = ctx;

  test("API v1 relay, meta and version paths are answered by the relay, known or not", async () => {
    for (const path of ["/api/v1/relay/servers/next", "/api/v1/relay/nope", "/api/v1/relay/", "/api/v1/meta", "/api/v1/version", "/api/v1/meta/x"]) {
      const res = await ctx.relay.get(path);
      expect({ path, from: ((await res.json()) as Record<string, unknown>).from }).toEqual({ path, from: undefined });
    }
    expect(seen).toEqual([]);
  });

  test("other /api/ paths are still proxied", async () => {
    const res = await ctx.relay.get("/api/v1/models");
    expect(await res.json()).toEqual({ from: "upstream" });
    expect(seen).toEqual(["/api/v1/models"]);
  });
});

describe("the relay's namespace in disguise is not forwarded either", () => {
  const ctx = withRecordingUpstream();
  const { seen } = ctx;

  test.each(["/api/v1/%72elay/servers/next", "/api/v1//relay/servers/next", "/api/v1/relay;x/servers/register", "/api/v1/relay", "/API/V1/RELAY/servers/next", "/api/v1/Meta"])(
    "%s answers from the relay",
    async (path) => {
      const res = await fetch(ctx.relay.url + path);
      expect(((await res.json()) as Record<string, unknown>).from).toBeUndefined();
      expect(seen).toEqual([]);
    },
  );
});

describe("paths not in normal form and operator reads through a proxy", () => {
  // Bun resolves dot segments, `%2e` and `\` in req.url before the relay runs, except when the
  // Host header makes it leave req.url relative or unparseable: then the relay sees the raw path.
  let relay: TestRelay;
  let tokened: TestRelay;
  const METRICS_TOKEN = "routing-metrics-token-0123456789abcdef";
  beforeAll(() => {
    relay = startTestRelay({ TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES: "true" });
    tokened = startTestRelay({ TOKENPLACE_METRICS_TOKEN: METRICS_TOKEN });
  });
  afterAll(async () => {
    await relay.shutdown();
    await tokened.shutdown();
  });
  const DISGUISED = ["/api/..\\metrics", "/api/%2e%2e/relay/diagnostics", "/v1/.%2E/metrics", "/api/v1/relay/%2e%2e/%2e%2e/%2e%2e/metrics", "/api/..\\relay\\diagnostics", "/api/../sink"];

  test("a raw path that URL parsing would change is refused: JSON 400 invalid_path, whichever route it would name", async () => {
    for (const host of ["a@b", "a/b", "[::1"]) {
      for (const target of DISGUISED) {
        const res = await rawRequest(relay.port, rawGet(target, host));
        expect({ host, target, status: res.status }).toEqual({ host, target, status: 400 });
        expect(JSON.parse(res.body)).toEqual({
          error: { message: "Request path is not in normal form (dot segments, backslashes or characters that need percent-encoding)", code: 400, type: "invalid_path" },
        });
      }
    }
    // The same invalid Host with a plain path reaches no route either (RFC 9112 §3.2).
    const plain = await rawRequest(relay.port, rawGet("/livez", "a@b"));
    expect(plain.status).toBe(400);
    expect(JSON.parse(plain.body).error.type).toBe("invalid_host");
  });

  test("without a metrics token, /metrics and /relay/diagnostics refuse requests that came through a proxy, disguised or not", async () => {
    for (const header of ["X-Forwarded-For: 203.0.113.9", "Forwarded: for=203.0.113.9", "X-Real-IP: 203.0.113.9"]) {
      for (const target of [...DISGUISED.slice(0, 5), "/metrics", "/relay/diagnostics"]) {
        const res = await rawRequest(relay.port, rawGet(target, "relay.example", `${header}\r\n`));
        expect({ header, target, status: res.status }).toEqual({ header, target, status: 403 });
        expect(JSON.parse(res.body).error).toMatchObject({ code: 403, type: "operator_read_forwarded" });
      }
    }
    // Scraped directly (Prometheus, kubelet, kubectl port-forward): served as upstream serves them.
    expect((await rawRequest(relay.port, rawGet("/metrics"))).status).toBe(200);
    expect((await rawRequest(relay.port, rawGet("/relay/diagnostics"))).status).toBe(200);
    // Other routes through a proxy are untouched.
    expect((await rawRequest(relay.port, rawGet("/api/v1/version", "relay.example", "X-Forwarded-For: 203.0.113.9\r\n"))).status).toBe(200);
  });

  test("with a metrics token the token decides, through a proxy or not", async () => {
    const via = "X-Forwarded-For: 203.0.113.9\r\n";
    expect((await rawRequest(tokened.port, rawGet("/metrics", "relay.example", via))).status).toBe(401);
    expect((await rawRequest(tokened.port, rawGet("/metrics", "relay.example", `${via}Authorization: Bearer ${METRICS_TOKEN}\r\n`))).status).toBe(200);
  });
});
