/**
 * Found by the hostile fuzz (test/fuzz/hostile.test.ts): Bun builds `req.url` from the Host header,
 * so a request with no Host (HTTP/1.0), an empty one or one like `[::1` or `relay:99999` had a
 * req.url that `new URL()` refused, and the relay routed it to `/`: the chat page answered
 * `GET /api/v1/meta`, and every POST route answered `405 Allow: GET, HEAD`. Every request with no
 * Host, an empty one or a valid one now reaches the route its path names; an invalid Host is
 * refused 400 invalid_host (RFC 9112 §3.2) before any route.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { requestUrl } from "../../src/http/request-url.ts";
import { startTestRelay } from "../helpers/relay.ts";
import { head, rawRequest } from "./raw-http.ts";

describe("requestUrl", () => {
  test("keeps the path and query of every form of req.url Bun produces, and refuses a target without a path", () => {
    expect(requestUrl("http://relay.test/api/v1/meta?x=1").pathname).toBe("/api/v1/meta");
    expect(requestUrl("/api/v1/relay/servers/next?model=m").searchParams.get("model")).toBe("m");
    expect(requestUrl("http://[::1/api/v1/meta").pathname).toBe("/api/v1/meta");
    expect(requestUrl("http://relay:99999/sink").pathname).toBe("/sink");
    expect(requestUrl("http://relay.test//api/v1/meta").pathname).toBe("//api/v1/meta");
    expect(requestUrl("//evil.example/x").pathname).toBe("//evil.example/x");
    expect(requestUrl("http://relay.test").pathname).toBe("/");
    expect(() => requestUrl("relay:443")).toThrow(TypeError);
  });
});

describe("Host headers: absent, empty or valid ones reach the route the path names, invalid ones are refused", () => {
  const relay = startTestRelay();
  afterAll(() => relay.shutdown());
  const send = async (method: string, target: string, host: string | undefined, body?: string) => {
    const fields: [string, string][] = host === undefined ? [] : [["Host", host]];
    if (body !== undefined) fields.push(["Content-Type", "application/json"], ["Content-Length", String(body.length)]);
    const o = await rawRequest({ port: relay.port, parts: [head(method, target, fields, host === undefined ? "HTTP/1.0" : "HTTP/1.1") + (body ?? "")], timeoutMs: 5_000 });
    const r = o.responses[0]!;
    return { status: r.status, type: r.headers["content-type"], allow: r.headers["allow"], body: Buffer.from(r.body).toString() };
  };

  for (const host of [undefined, "", "relay.test:99999"]) {
    test(`Host ${JSON.stringify(host ?? "(none, HTTP/1.0)")}`, async () => {
      const meta = await send("GET", "/api/v1/meta", host);
      expect(meta.status).toBe(200);
      expect(meta.type).toContain("application/json");
      expect(JSON.parse(meta.body).version).toBeString();

      const post = await send("POST", "/api/v1/relay/requests", host, "{}");
      expect(post.status).toBe(400);
      expect(post.allow).toBeUndefined();

      // The query is read through the same helper (new URL(req.url) would throw here: a 500).
      const next = await send("GET", "/api/v1/relay/servers/next?model=m", host);
      expect(next.status).toBe(503);
      expect(JSON.parse(next.body).error.code).toBe("no_registered_compute_nodes");
    });
  }

  for (const host of ["[::1", ":80", "a/b", "relé.test"]) {
    test(`Host ${JSON.stringify(host)}: 400 invalid_host on every route`, async () => {
      for (const [method, target, body] of [["GET", "/api/v1/meta"], ["POST", "/api/v1/relay/requests", "{}"], ["GET", "/api/v1/relay/servers/next?model=m"]] as const) {
        const r = await send(method, target, host, body);
        expect(r.status).toBe(400);
        expect(JSON.parse(r.body).error).toMatchObject({ code: 400, type: "invalid_host" });
      }
    });
  }

  test("CONNECT with an authority-form target routes nowhere: 404", async () => {
    const r = await send("CONNECT", "relay.test:443", "relay.test");
    expect(r.status).toBe(404);
    expect(JSON.parse(r.body).error.type).toBe("not_found");
  });
});
