import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { openRaw, type RawConn } from "../helpers/raw-socket.ts";
import { startTestRelay, type TestRelay } from "../helpers/relay.ts";

/**
 * Content-Length must be one decimal number (RFC 9110 §8.6, RFC 9112 §6.3). Bun joins a repeated
 * header line into "N, N" and passes it on; read as a number that is NaN, which compared false with
 * every limit, so a body of any size was read past the route's limit, RELAY_MAX_BODY_BYTES and the
 * body budget. Over real sockets: the framing is what is attacked.
 */
const head = (path: string, lengths: string[], extra = "") =>
  `POST ${path} HTTP/1.1\r\nHost: relay.test\r\nContent-Type: application/json\r\n${lengths.map((l) => `Content-Length: ${l}\r\n`).join("")}${extra}\r\n`;

describe("Content-Length framing", () => {
  let relay: TestRelay;
  let upstream: ReturnType<typeof Bun.serve>;
  let upstreamHits = 0;
  const open: RawConn[] = [];
  const raw = async () => {
    const c = await openRaw(Number(new URL(relay.url).port));
    open.push(c);
    return c;
  };

  beforeAll(() => {
    upstream = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => (upstreamHits++, new Response("{}")) });
    relay = startTestRelay({ TOKENPLACE_RELAY_ONLY: "false", TOKENPLACE_RELAY_UPSTREAM_URL: `http://127.0.0.1:${upstream.port}`, TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES: "true", RATE_LIMITS_ENABLED: "false" });
  });
  afterAll(async () => {
    for (const c of open) c.destroy();
    await relay.shutdown();
    upstream.stop(true);
  });

  const paths = ["/api/v1/relay/responses/retrieve", "/api/v1/relay/requests", "/faucet", "/api/v1/chat/completions"];
  for (const path of paths) {
    test(`${path}: a repeated Content-Length is refused 400 before the body is read, and the connection closed`, async () => {
      const c = await raw();
      // 100 MB announced twice; only the head is sent, so an answer proves nothing was read.
      c.send(head(path, ["100000000", "100000000"]));
      const r = await c.reply(5_000);
      expect(r.status).toBe(400);
      expect(r.headers.connection?.toLowerCase()).toBe("close");
      expect(JSON.parse(r.body)).toEqual({
        error: { message: "Content-Length must be one decimal number of bytes", code: 400, type: "invalid_content_length" },
      });
      await c.closed;
    });
  }

  test("the proxy never forwards such a request upstream", () => {
    expect(upstreamHits).toBe(0);
  });

  // RFC 9112 §3.2: 400 for an invalid Host or more than one; neither reaches a route or the upstream
  // (where it would travel as X-Forwarded-Host).
  const badHosts = ["evil@127.0.0.1", "a/b", "a b", "x:99999999", "relay.test\r\nHost: other"];
  for (const path of ["/api/v1/relay/responses/retrieve", "/api/v1/chat/completions"]) {
    test(`${path}: an invalid or repeated Host is refused 400 invalid_host, and the connection closed`, async () => {
      for (const host of badHosts) {
        const c = await raw();
        c.send(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
        const r = await c.reply(5_000);
        expect(r.status, host).toBe(400);
        expect(r.headers.connection?.toLowerCase()).toBe("close");
        expect(JSON.parse(r.body).error).toMatchObject({ code: 400, type: "invalid_host" });
      }
      expect(upstreamHits).toBe(0);
    });
  }

  test("host names, IPv4 and IPv6 addresses and service names with a port are accepted", async () => {
    for (const host of ["relay.test", "127.0.0.1:5010", "[::1]:8080", "tokenplace_relay:5010", "token.place."]) {
      const c = await raw();
      c.send(`GET /livez HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
      expect((await c.reply(5_000)).status, host).toBe(200);
    }
  });

  test("a single valid Content-Length still reaches the route", async () => {
    const c = await raw();
    const body = JSON.stringify({ client_public_key: "x" });
    c.send(head("/api/v1/relay/responses/retrieve", [String(body.length)]) + body);
    const r = await c.reply(5_000);
    expect(r.status).toBe(404);
    expect(JSON.parse(r.body).error.message).toBe("No response available for the given public key");
  });
});
