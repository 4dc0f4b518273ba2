// Private operator endpoints (spec §6.11): /metrics and /relay/diagnostics behind
// TOKENPLACE_METRICS_TOKEN (Authorization: Bearer, constant-time), /metrics off with
// TOKENPLACE_METRICS_DISABLED, a token set but empty refused at start.
import { afterAll, beforeAll, describe, expect, spyOn, test } from "bun:test";
import { connect } from "node:net";
import * as tokens from "../../src/common/tokens.ts";
import { describeConfig, loadConfig } from "../../src/config/index.ts";
import { bearerCredentials, createOperatorReadGuard } from "../../src/ops/operator-auth.ts";
import { RELAY_ROUTE_SPECS } from "../../src/routes.ts";
import { captureLogger, startTestRelay, type TestRelay } from "../helpers/relay.ts";

const TOKEN = "metrics-token-0123456789abcdef";
const PRIVATE = ["/metrics", "/relay/diagnostics"] as const;

const get = (relay: TestRelay, path: string, headers: Record<string, string> = {}) => fetch(relay.url + path, { headers });
const bearer = (t: string) => ({ Authorization: `Bearer ${t}` });

/** A raw HTTP/1.1 GET, so the request target reaches the relay exactly as written. */
function rawGet(port: number, target: string, headers: Record<string, string> = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const head = [`GET ${target} HTTP/1.1`, "Host: x", "Connection: close", ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)].join("\r\n");
    const sock = connect(port, "127.0.0.1", () => sock.end(`${head}\r\n\r\n`));
    let got = "";
    sock.on("data", (d) => (got += d));
    sock.on("end", () => resolve(got));
    sock.on("error", reject);
  });
}

async function expect401(res: Response, code: string): Promise<void> {
  expect(res.status).toBe(401);
  expect(res.headers.get("content-type")).toContain("application/json");
  expect(res.headers.get("www-authenticate")).toBe('Bearer realm="tokenplace-relay"');
  expect(res.headers.get("cache-control")).toBe("no-store");
  expect(res.headers.get("x-request-id")).toBeTruthy();
  const body = (await res.json()) as { error: { code: string; type: string } };
  expect(body.error).toMatchObject({ code, type: "authentication_error" });
}

describe("route tables declare the private operator reads", () => {
  test("/metrics is metrics-scrape, /relay/diagnostics metrics-token; nothing else uses them", () => {
    const byPath = Object.fromEntries(RELAY_ROUTE_SPECS.map((s) => [s.path, s.auth]));
    expect(byPath["/metrics"]).toBe("metrics-scrape");
    expect(byPath["/relay/diagnostics"]).toBe("metrics-token");
    const others = RELAY_ROUTE_SPECS.filter((s) => s.auth === "metrics-scrape" || s.auth === "metrics-token").map((s) => s.path);
    expect(others.sort()).toEqual([...PRIVATE].sort());
  });
});

describe("TOKENPLACE_METRICS_TOKEN set", () => {
  let relay: TestRelay;
  const { logger, raw } = captureLogger("debug");
  beforeAll(() => {
    relay = startTestRelay({ TOKENPLACE_METRICS_TOKEN: TOKEN }, { logger });
  });
  afterAll(() => relay.shutdown());

  for (const path of PRIVATE) {
    test(`${path}: 401 metrics_token_invalid without a bearer, with a wrong one, with another scheme`, async () => {
      await expect401(await get(relay, path), "metrics_token_invalid");
      await expect401(await get(relay, path, bearer("x".repeat(TOKEN.length))), "metrics_token_invalid"); // same length
      await expect401(await get(relay, path, bearer(`${TOKEN}x`)), "metrics_token_invalid"); // prefix of the token
      await expect401(await get(relay, path, bearer(TOKEN.slice(0, -1))), "metrics_token_invalid");
      await expect401(await get(relay, path, { Authorization: TOKEN }), "metrics_token_invalid"); // no scheme
      await expect401(await get(relay, path, { Authorization: `Basic ${btoa(`x:${TOKEN}`)}` }), "metrics_token_invalid");
      await expect401(await get(relay, path, { Authorization: "Bearer " }), "metrics_token_invalid");
      // The operator header is not a way in either.
      await expect401(await get(relay, path, { "X-Token-Place-Operator": TOKEN }), "metrics_token_invalid");
    });

    test(`${path}: 200 with the right bearer (scheme case-insensitive), no-store`, async () => {
      for (const auth of [`Bearer ${TOKEN}`, `bearer ${TOKEN}`, `BEARER  ${TOKEN}`]) {
        const res = await get(relay, path, { Authorization: auth });
        expect(res.status).toBe(200);
        expect(res.headers.get("cache-control")).toBe("no-store");
        await res.arrayBuffer();
      }
    });
  }

  test("the answers are the routes' own: Prometheus text and the diagnostics JSON", async () => {
    const m = await get(relay, "/metrics", bearer(TOKEN));
    expect(m.headers.get("content-type")).toContain("text/plain");
    expect(await m.text()).toContain("tokenplace_relay_http_requests_total");
    const d = (await (await get(relay, "/relay/diagnostics", bearer(TOKEN))).json()) as Record<string, unknown>;
    expect(d).toMatchObject({ total_registered_compute_nodes: 0, registered_compute_nodes: [] });
  });

  test("refusals are counted by code", async () => {
    await get(relay, "/metrics", bearer("wrong-token-0123456789abcdef"));
    const text = await (await get(relay, "/metrics", bearer(TOKEN))).text();
    expect(text).toMatch(/^tokenplace_relay_rejections_total\{reason="metrics_token_invalid"\} [1-9]\d*$/m);
  });

  test("a disguised path reaches the same guard (dot segments, percent-encoded dots)", async () => {
    for (const target of ["/api/../metrics", "/api/%2e%2e/metrics", "/relay/./diagnostics", "/x/%2E%2E/relay/diagnostics"]) {
      expect(await rawGet(relay.port, target)).toStartWith("HTTP/1.1 401");
      expect(await rawGet(relay.port, target, bearer(TOKEN))).toStartWith("HTTP/1.1 200");
    }
  });

  test("other routes are untouched: probes and the public API need no metrics token", async () => {
    expect((await get(relay, "/livez")).status).toBe(200);
    expect((await get(relay, "/healthz")).status).toBe(200);
    expect((await get(relay, "/api/v1/version")).status).toBe(200);
  });

  test("the token never reaches the logs", () => {
    const all = raw.join("\n");
    expect(all).toContain('"route":"/metrics"');
    expect(all).not.toContain(TOKEN);
    expect(all).not.toContain(TOKEN.slice(0, -1));
  });
});

describe("TOKENPLACE_METRICS_DISABLED", () => {
  test("with a token: /metrics 401 metrics_disabled even with the right bearer; diagnostics still served with it", async () => {
    const relay = startTestRelay({ TOKENPLACE_METRICS_DISABLED: "true", TOKENPLACE_METRICS_TOKEN: TOKEN });
    try {
      await expect401(await get(relay, "/metrics", bearer(TOKEN)), "metrics_disabled");
      await expect401(await get(relay, "/metrics"), "metrics_disabled");
      expect((await get(relay, "/relay/diagnostics", bearer(TOKEN))).status).toBe(200);
      await expect401(await get(relay, "/relay/diagnostics"), "metrics_token_invalid");
    } finally {
      await relay.shutdown();
    }
  });

  test("without a token: /metrics 401 metrics_disabled, diagnostics open as upstream", async () => {
    const relay = startTestRelay({ TOKENPLACE_METRICS_DISABLED: "1" });
    try {
      await expect401(await get(relay, "/metrics"), "metrics_disabled");
      expect((await get(relay, "/relay/diagnostics")).status).toBe(200);
    } finally {
      await relay.shutdown();
    }
  });
});

describe("neither set (upstream's default)", () => {
  test("both routes open; a bearer is ignored", async () => {
    const relay = startTestRelay();
    try {
      for (const path of PRIVATE) {
        expect((await get(relay, path)).status).toBe(200);
        expect((await get(relay, path, bearer("anything-at-all-0123456789"))).status).toBe(200);
      }
    } finally {
      await relay.shutdown();
    }
  });
});

describe("configuration", () => {
  test("set but empty (or blank) is a problem at start, not a relay that answers every scrape 401", () => {
    for (const value of ["", "   ", "\n"]) {
      const { problems } = loadConfig({ TOKENPLACE_METRICS_TOKEN: value });
      expect(problems).toHaveLength(1);
      expect(problems[0]).toContain("TOKENPLACE_METRICS_TOKEN: set but empty");
      expect(problems[0]).toContain("TOKENPLACE_METRICS_DISABLED=true");
    }
  });

  test("at least 16 characters; no control characters; not a registration or operator token", () => {
    expect(loadConfig({ TOKENPLACE_METRICS_TOKEN: "short" }).problems.join("\n")).toContain("TOKENPLACE_METRICS_TOKEN: must be at least 16 characters");
    expect(loadConfig({ TOKENPLACE_METRICS_TOKEN: "x".repeat(16) }).problems).toEqual([]);
    expect(loadConfig({ TOKENPLACE_METRICS_TOKEN: "metrics-token\u0007-0123456789" }).problems.join("\n")).toContain("control character");
    const server = loadConfig({ TOKENPLACE_METRICS_TOKEN: TOKEN, TOKEN_PLACE_RELAY_SERVER_TOKENS: `other-server-token-0123,${TOKEN}` }).problems;
    expect(server.join("\n")).toContain("equals a registration token");
    const operator = loadConfig({ TOKENPLACE_METRICS_TOKEN: TOKEN, TOKEN_PLACE_OPERATOR_TOKEN: TOKEN }).problems;
    expect(operator.join("\n")).toContain("equals an operator token");
  });

  test("surrounding white space (a Secret written with echo) is not part of the token", async () => {
    const { config, problems } = loadConfig({ TOKENPLACE_METRICS_TOKEN: `${TOKEN}\n` });
    expect(problems).toEqual([]);
    expect(config.operator.metricsToken).toBe(TOKEN);
  });

  test("TOKENPLACE_METRICS_DISABLED takes the relay's booleans; junk is a problem", () => {
    expect(loadConfig({}).config.operator).toEqual({ metricsDisabled: false });
    expect(loadConfig({ TOKENPLACE_METRICS_DISABLED: "yes" }).config.operator.metricsDisabled).toBe(true);
    expect(loadConfig({ TOKENPLACE_METRICS_DISABLED: "off" }).config.operator.metricsDisabled).toBe(false);
    expect(loadConfig({ TOKENPLACE_METRICS_DISABLED: "maybe" }).problems.join("\n")).toContain("TOKENPLACE_METRICS_DISABLED: expected true or false");
  });

  test("both are known settings (no typo warning) and --check-config never prints the token", () => {
    const { config, unknown, known } = loadConfig({ TOKENPLACE_METRICS_TOKEN: TOKEN, TOKENPLACE_METRICS_DISABLED: "false" });
    expect(unknown).toEqual([]);
    expect(known.has("TOKENPLACE_METRICS_TOKEN") && known.has("TOKENPLACE_METRICS_DISABLED")).toBe(true);
    const printed = JSON.stringify(describeConfig(config));
    expect(printed).not.toContain(TOKEN);
    expect(describeConfig(config).operator).toEqual({ metrics: "bearer token required (redacted)", diagnostics: "bearer token required (redacted)" });
    expect(describeConfig(loadConfig({ TOKENPLACE_METRICS_DISABLED: "true" }).config).operator).toEqual({
      metrics: "disabled (401 metrics_disabled)",
      diagnostics: "open (TOKENPLACE_METRICS_TOKEN unset)",
    });
  });
});

describe("the guard", () => {
  const req = (headers: Record<string, string> = {}) => new Request("http://relay/metrics", { headers });

  test("compares through the constant-time helper (createTokenCheck), once per request, with the bearer's credentials", () => {
    const original = tokens.createTokenCheck;
    const presented: (string | null)[] = [];
    const spy = spyOn(tokens, "createTokenCheck").mockImplementation((list) => {
      const check = original(list);
      return (p) => (presented.push(p), check(p));
    });
    try {
      const guard = createOperatorReadGuard({ metricsToken: TOKEN, metricsDisabled: false });
      expect(spy).toHaveBeenCalledTimes(1);
      expect(spy.mock.calls[0]![0]).toEqual([TOKEN]);
      expect(() => guard("metrics-scrape", req(bearer("wrong-token-0123456789abcdef")))).toThrow();
      expect(() => guard("metrics-token", req(bearer(TOKEN)))).not.toThrow();
      expect(() => guard("metrics-token", req())).toThrow();
      expect(presented).toEqual(["wrong-token-0123456789abcdef", TOKEN, null]);
    } finally {
      spy.mockRestore();
    }
  });

  test("no-op for every other route kind", () => {
    const guard = createOperatorReadGuard({ metricsToken: TOKEN, metricsDisabled: true });
    for (const auth of [undefined, "server-token"] as const) expect(() => guard(auth, req())).not.toThrow();
  });

  test("bearerCredentials", () => {
    expect(bearerCredentials(null)).toBeNull();
    expect(bearerCredentials("")).toBeNull();
    expect(bearerCredentials("Bearer")).toBeNull();
    expect(bearerCredentials("Bearer ")).toBeNull();
    expect(bearerCredentials("Basic abc")).toBeNull();
    expect(bearerCredentials("Bearerabc")).toBeNull();
    expect(bearerCredentials("Bearer abc")).toBe("abc");
    expect(bearerCredentials("bearer   abc  ")).toBe("abc");
  });
});
