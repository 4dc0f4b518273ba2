/**
 * Upstream failures against real processes: refused connections, an upstream process that dies
 * mid-stream, and upstream health in readiness.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createProxyRoute } from "../../src/proxy/index.ts";
import { captureLogger, startTestRelay, type TestRelay } from "../helpers/relay.ts";
import { eventually, metricValue, readEvents, startFixture, type Fixture } from "./helpers.ts";

/** A loopback port with nothing listening (bound, then released). */
function closedPort(): number {
  const s = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
  const port = s.port!;
  s.stop(true);
  return port;
}

function proxyRelay(env: Record<string, string>, logger = captureLogger("warn").logger): TestRelay {
  return startTestRelay(
    { TOKENPLACE_RELAY_ONLY: "false", ...env },
    { logger, proxy: (d) => createProxyRoute({ ...d, env: { BUN_CONFIG_MAX_HTTP_REQUESTS: "1024" } }) },
  );
}

const relays: TestRelay[] = [];
const fixtures: Fixture[] = [];
afterAll(async () => {
  await Promise.all(relays.map((r) => r.shutdown()));
  await Promise.all(fixtures.map((f) => f.stop()));
});

describe("unreachable upstream", () => {
  test("connection refused gives a fast JSON 502", async () => {
    const relay = proxyRelay({ TOKENPLACE_RELAY_UPSTREAM_URL: `http://127.0.0.1:${closedPort()}` });
    relays.push(relay);
    const t0 = Date.now();
    const res = await fetch(`${relay.url}/api/v1/chat/completions`, { method: "POST", body: JSON.stringify({ stream: true }) });
    const took = Date.now() - t0;
    expect(res.status).toBe(502);
    expect(res.headers.get("content-type")).toContain("application/json");
    expect(await res.json()).toMatchObject({ error: { code: 502, type: "upstream_unreachable" } });
    expect(took).toBeLessThan(2_000);
    expect(metricValue(await relay.metrics.registry.metrics(), "tokenplace_relay_upstream_errors_total", { kind: "connect" })).toBe(1);
  });

  test("with several upstreams a refused one fails over before any byte went out, then is ejected", async () => {
    const fx = await startFixture();
    fixtures.push(fx);
    const dead = `http://127.0.0.1:${closedPort()}`;
    const relay = proxyRelay({ TOKEN_PLACE_RELAY_UPSTREAMS: `${dead},${fx.url}`, RELAY_UPSTREAM_EJECT_MS: "60000" });
    relays.push(relay);
    for (let k = 0; k < 4; k++) {
      const res = await fetch(`${relay.url}/api/echo`, { method: "POST", body: `{"k":${k}}` });
      expect(res.status).toBe(200);
      expect(((await res.json()) as { bodyBytes: number }).bodyBytes).toBe(`{"k":${k}}`.length);
    }
    // Refused once, then left out of the rotation for the ejection period.
    expect(metricValue(await relay.metrics.registry.metrics(), "tokenplace_relay_upstream_errors_total", { kind: "connect" })).toBe(1);
  });
});

describe("upstream process dies mid-stream", () => {
  test("the client's response ends, the failure is logged and counted, the relay stays up", async () => {
    const fx = await startFixture();
    fixtures.push(fx);
    const log = captureLogger("warn");
    const relay = proxyRelay({ TOKENPLACE_RELAY_UPSTREAM_URL: fx.url }, log.logger);
    relays.push(relay);
    const res = await fetch(`${relay.url}/api/crash?after=2&exit=1`);
    expect(res.status).toBe(200);
    const { events, error } = await readEvents(res);
    expect(events.map((e) => e.i)).toEqual([0, 1]);
    expect(error).toBeDefined();
    expect(await fx.proc.exited).toBe(1);
    const metrics = async () => relay.metrics.registry.metrics();
    expect(await eventually(async () => metricValue(await metrics(), "tokenplace_relay_upstream_errors_total", { kind: "reset" }) === 1)).toBe(true);
    expect(metricValue(await metrics(), "tokenplace_relay_proxy_active_streams")).toBe(0);
    expect(log.lines.find((l) => l.msg === "proxied stream ended abnormally")).toMatchObject({ level: "warn", kind: "reset", upstream: fx.url });
    // The next request finds nobody listening: a prompt 502, not a hang.
    const after = await fetch(`${relay.url}/api/sse`);
    expect(after.status).toBe(502);
    expect((await fetch(`${relay.url}/livez`)).status).toBe(200);
  });
});

describe("upstream health", () => {
  let fx: Fixture;
  beforeAll(async () => {
    fx = await startFixture();
    fixtures.push(fx);
  });

  test("/healthz reports the upstream; with the requirement off a failing probe does not flip readiness", async () => {
    const relay = proxyRelay({ TOKENPLACE_RELAY_UPSTREAM_URL: `http://127.0.0.1:${closedPort()}`, RELAY_UPSTREAM_HEALTH_INTERVAL_MS: "500" });
    relays.push(relay);
    const res = await fetch(`${relay.url}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: "ok", upstreamHealthy: false, upstreamHealthRequired: false });
  });

  test("with TOKENPLACE_RELAY_REQUIRE_UPSTREAM_HEALTH readiness follows the cached probe", async () => {
    const relay = proxyRelay({
      TOKENPLACE_RELAY_UPSTREAM_URL: fx.url,
      TOKENPLACE_RELAY_REQUIRE_UPSTREAM_HEALTH: "true",
      RELAY_UPSTREAM_HEALTH_INTERVAL_MS: "500",
    });
    relays.push(relay);
    const healthz = async () => {
      const r = await fetch(`${relay.url}/healthz`);
      return { status: r.status, body: (await r.json()) as Record<string, unknown> };
    };
    expect(await healthz()).toMatchObject({ status: 200, body: { upstreamHealthy: true } });
    const probesBefore = (await fx.requests()).filter((r) => r === "GET /health").length;
    // Readiness requests are answered from the cache: a burst does not reach the upstream.
    await Promise.all(Array.from({ length: 20 }, () => healthz()));
    expect((await fx.requests()).filter((r) => r === "GET /health").length - probesBefore).toBeLessThanOrEqual(1);

    await fetch(`${fx.url}/__ctl/health?status=503`);
    expect(await eventually(async () => (await healthz()).status === 503, 5_000)).toBe(true);
    expect(await healthz()).toMatchObject({ body: { status: "degraded", upstreamHealthy: false, failing: ["upstream"] } });
    expect(await relay.metrics.registry.metrics()).toContain(`tokenplace_relay_upstream_up{upstream="${fx.url}"} 0`);

    await fetch(`${fx.url}/__ctl/health?status=200`);
    expect(await eventually(async () => (await healthz()).status === 200, 5_000)).toBe(true);
    expect(await relay.metrics.registry.metrics()).toContain(`tokenplace_relay_upstream_up{upstream="${fx.url}"} 1`);
  });
});
