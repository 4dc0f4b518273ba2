// Which routes exist: the legacy switch (spec §12), and the relay's own namespace winning over the
// proxy prefixes, so nothing under /api/v1/relay/ ever reaches the GPU upstream.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Server } from "bun";
import { createProxyRoute } from "../../src/proxy/index.ts";
import { RELAY_ROUTE_SPECS } from "../../src/routes.ts";
import { fakeKey, job, startLegacyRelay, startTestRelay, type TestRelay } from "../helpers/relay.ts";

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
