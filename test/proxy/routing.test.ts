/**
 * Who decides where a request goes, and what headers cross: raw bytes over TCP so nothing
 * (fetch, URL parsing in the client) cleans the request up before the relay sees it.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Server } from "bun";
import { createProxyRoute } from "../../src/proxy/index.ts";
import { startTestRelay, type TestRelay } from "../helpers/relay.ts";
import type { Spawned } from "../helpers/spawn.ts";
import { rawGet, rawRequest, startFixture, startProxyRelay, type Fixture } from "./helpers.ts";

let fx: Fixture;
let relay: Spawned;
let decoy: Server<undefined>;
let decoyHits = 0;

beforeAll(async () => {
  fx = await startFixture();
  relay = await startProxyRelay(fx.url);
  decoy = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: () => {
      decoyHits++;
      return new Response("decoy");
    },
  });
});

afterAll(async () => {
  relay?.kill("SIGKILL");
  await relay?.proc.exited;
  await fx?.stop();
  await decoy?.stop(true);
});

type Echo = { path: string; search: string; headers: Record<string, string> };
const echoOf = (body: string) => JSON.parse(body) as Echo;

describe("the request cannot choose the target", () => {
  test("an absolute-form request-target naming another host still goes to the upstream", async () => {
    const d = `127.0.0.1:${decoy.port}`;
    const res = await rawRequest(relay.port, rawGet(`http://${d}/api/echo?via=absolute`, d));
    expect(res.status).toBe(200);
    const echo = echoOf(res.body);
    expect(echo.path).toBe("/api/echo");
    expect(echo.search).toBe("?via=absolute");
    // The client's Host is reported, never used to connect.
    expect(echo.headers["x-forwarded-host"]).toBe(d);
    expect(echo.headers.host).toBe(`127.0.0.1:${fx.port}`);
    expect(decoyHits).toBe(0);
  });

  test("a Host header naming another host does not redirect the proxy", async () => {
    const res = await rawRequest(relay.port, rawGet("/v1/echo", `127.0.0.1:${decoy.port}`));
    expect(res.status).toBe(200);
    expect(echoOf(res.body).path).toBe("/v1/echo");
    expect(decoyHits).toBe(0);
  });

  test("a malformed Host (with @ or /) cannot smuggle a target either", async () => {
    for (const host of [`x@127.0.0.1:${decoy.port}`, `127.0.0.1:${decoy.port}/api`]) {
      const res = await rawRequest(relay.port, rawGet("/api/echo", host));
      // Whatever the relay makes of it (an error, or its own page at /), never the decoy's answer.
      expect(res.status).toBeLessThan(500);
    }
    expect(decoyHits).toBe(0);
  });

  test("dot segments that leave the prefix reach the relay's own route, never the upstream", async () => {
    const before = (await fx.requests()).length;
    for (const target of ["/api/../metrics", "/api/%2e%2e/metrics", "/api/.%2E/metrics", "/api\\..\\metrics"]) {
      const res = await rawRequest(relay.port, rawGet(target));
      expect(res.status).toBe(200);
      expect(res.body).toContain("tokenplace_relay_");
    }
    const res = await rawRequest(relay.port, rawGet("/api/%2e%2e/%2e%2e/etc/passwd"));
    expect(res.status).toBe(404);
    expect((await fx.requests()).slice(before)).toEqual([]);
  });

  test("through an Ingress (a forwarding header) those disguises find the operator reads closed without a metrics token", async () => {
    const before = (await fx.requests()).length;
    for (const target of ["/api/../metrics", "/api/%2e%2e/relay/diagnostics", "/v1/.%2E/metrics", "/api\\..\\metrics", "/api/v1/relay/%2e%2e/%2e%2e/%2e%2e/metrics"]) {
      const res = await rawRequest(relay.port, rawGet(target, "relay.example", "X-Forwarded-For: 203.0.113.7\r\n"));
      expect({ target, status: res.status }).toEqual({ target, status: 403 });
      expect(JSON.parse(res.body)).toMatchObject({ error: { code: 403, type: "operator_read_forwarded" } });
    }
    expect((await fx.requests()).slice(before)).toEqual([]);
  });

  test("`..;` and double-encoded dots are no dot segments: forwarded as they are, never to a relay route", async () => {
    for (const target of ["/api/..;/sink", "/v1/%252e%252e/sink"]) {
      const before = (await fx.requests()).length;
      const res = await rawRequest(relay.port, rawGet(target));
      // The fixture's own 404 for a path it does not serve: the upstream decides.
      expect(JSON.parse(res.body)).toMatchObject({ error: "fixture: no such route" });
      expect((await fx.requests()).slice(before)).toEqual([`GET ${target}`]);
    }
  });

  test("encoded separators, control characters and bad escapes are refused with a JSON 400", async () => {
    const before = (await fx.requests()).length;
    for (const target of ["/api/..%2fhealth", "/api/a%2Fb", "/api/..%5cx", "/api/x%00y", "/api/%zz", "/v1/%2e%2e%2f%2e%2e%2fhealth"]) {
      const res = await rawRequest(relay.port, rawGet(target));
      expect({ target, status: res.status }).toEqual({ target, status: 400 });
      expect(JSON.parse(res.body)).toMatchObject({ error: { code: 400, type: "bad_path" } });
    }
    expect((await fx.requests()).slice(before)).toEqual([]);
  });

  test("dot segments that stay inside a prefix are forwarded normalised, query untouched", async () => {
    const res = await rawRequest(relay.port, rawGet("/v1/models/../echo?a=../..&b=%2f#frag"));
    expect(res.status).toBe(200);
    const echo = echoOf(res.body);
    expect(echo.path).toBe("/v1/echo");
    expect(echo.search).toBe("?a=../..&b=%2f");
  });

  test("a path that only resembles a prefix is not proxied", async () => {
    for (const target of ["/api", "/apix/echo", "/API/echo", "//api/echo"]) {
      expect((await rawRequest(relay.port, rawGet(target))).status).toBe(404);
    }
  });

  test("CONNECT and TRACE are refused", async () => {
    const trace = await rawRequest(relay.port, "TRACE /api/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    expect(trace.status).toBe(405);
    const conn = await rawRequest(relay.port, `CONNECT 127.0.0.1:${decoy.port} HTTP/1.1\r\nHost: 127.0.0.1:${decoy.port}\r\nConnection: close\r\n\r\n`, 3_000).catch(() => undefined);
    expect(conn === undefined || conn.status !== 200).toBe(true);
    expect(decoyHits).toBe(0);
  });
});

describe("headers (RFC 9110 §7.6)", () => {
  test("hop-by-hop and relay-only request headers are stripped; forwarding headers are added", async () => {
    const req = [
      "POST /api/echo HTTP/1.1",
      "Host: relay.example:8443",
      "Connection: keep-alive, X-Hop-Named",
      "X-Hop-Named: must-not-pass",
      "Keep-Alive: timeout=5",
      "TE: trailers",
      "Proxy-Authorization: Basic cHJveHk6c2VjcmV0",
      "Proxy-Connection: keep-alive",
      "X-Relay-Server-Token: super-secret-node-registration-token",
      "X-Forwarded-For: 203.0.113.9",
      "X-Forwarded-Host: spoofed.example",
      "Forwarded: for=203.0.113.9",
      "X-Request-Id: trace-me-123",
      "Authorization: Bearer for-the-upstream",
      "Content-Type: application/json",
      "Content-Length: 2",
      "",
      "{}",
    ].join("\r\n");
    const res = await rawRequest(relay.port, req);
    expect(res.status).toBe(200);
    const h = echoOf(res.body).headers;
    for (const name of ["x-hop-named", "keep-alive", "te", "proxy-authorization", "proxy-connection", "x-relay-server-token", "forwarded"]) {
      expect({ name, value: h[name] }).toEqual({ name, value: undefined });
    }
    expect(h.connection ?? "").not.toContain("X-Hop-Named");
    // Untrusted by default: the relay's own view replaces what the client claimed.
    expect(h["x-forwarded-for"]).toBe("127.0.0.1");
    expect(h["x-forwarded-host"]).toBe("relay.example:8443");
    expect(h["x-forwarded-proto"]).toBe("http");
    expect(h["x-request-id"]).toBe("trace-me-123");
    expect(h.authorization).toBe("Bearer for-the-upstream");
    expect(h.via).toBe("1.1 tokenplace-relay");
    expect(res.headers["x-request-id"]).toBe("trace-me-123");
    // fetch runs with decompress: false, so it must not ask for an encoding the client did not accept.
    expect(h["accept-encoding"]).toBeUndefined();
  });

  test("hop-by-hop response headers are stripped; end-to-end ones (each Set-Cookie) pass", async () => {
    const inproc: TestRelay = startTestRelay(
      { TOKENPLACE_RELAY_ONLY: "false", TOKENPLACE_RELAY_UPSTREAM_URL: `http://127.0.0.1:${fx.rawPort}` },
      { proxy: (d) => createProxyRoute({ ...d, probe: false, env: { BUN_CONFIG_MAX_HTTP_REQUESTS: "1" } }) },
    );
    try {
      const res = await rawRequest(inproc.port, rawGet("/api/anything"));
      expect(res.status).toBe(200);
      expect(res.body).toBe("ok");
      for (const name of ["x-upstream-hop", "keep-alive", "proxy-authenticate", "proxy-connection", "x-relay-internal"]) {
        expect({ name, value: res.headers[name] }).toEqual({ name, value: undefined });
      }
      expect(res.headers["x-end-to-end"]).toBe("kept");
      expect(res.head.match(/^set-cookie: /gim)?.length).toBe(2);
      expect(res.headers.via).toBe("1.1 tokenplace-relay");
    } finally {
      await inproc.shutdown();
    }
  });
});
