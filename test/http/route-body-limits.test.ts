import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { SMALL_ROUTE_MAX_BODY_BYTES } from "../../src/config/defaults.ts";
import { RELAY_ROUTE_SPECS } from "../../src/routes.ts";
import { chunk, chunkedHead, openRaw, postHead, type RawConn } from "../helpers/raw-socket.ts";
import { fakeKey, startTestRelay, type TestRelay } from "../helpers/relay.ts";

/**
 * Per-route body limits (RouteSpec.maxBodyBytes): on routes whose valid bodies are small a larger
 * declared body is refused 413 before a byte of it is read (the client sends only the head here, so
 * an answer proves the relay did not wait for the body), with Connection: close; a chunked body is
 * cut at the limit while it streams. Over real sockets: the refusal is the server's framing.
 */
const TOKEN = "registration-token-0123456789";
const LIMIT = SMALL_ROUTE_MAX_BODY_BYTES;

const SMALL_ROUTES = [
  "/api/v1/relay/servers/register",
  "/api/v1/relay/servers/poll",
  "/api/v1/relay/servers/control",
  "/api/v1/relay/servers/unregister",
  "/unregister",
  "/api/v1/relay/requests/cancel",
  "/api/v1/relay/responses/retrieve",
  "/api/v1/relay/unregister",
  "/sink",
  "/retrieve",
  "/stream/retrieve",
];
/** Routes that carry ciphertext keep RELAY_MAX_BODY_BYTES. */
const CIPHERTEXT_ROUTES = ["/api/v1/relay/requests", "/api/v1/relay/responses", "/faucet", "/source", "/stream/source"];

describe("route table", () => {
  const byPath = new Map(RELAY_ROUTE_SPECS.map((s) => [s.path, s]));
  test("small-body routes declare the small limit, ciphertext routes none", () => {
    for (const path of SMALL_ROUTES) expect([path, byPath.get(path)?.maxBodyBytes]).toEqual([path, LIMIT]);
    for (const path of CIPHERTEXT_ROUTES) expect([path, byPath.get(path)?.maxBodyBytes]).toEqual([path, undefined]);
    expect(byPath.get("/api/v1/relay/progress")?.maxBodyBytes).toBe(16_384);
  });
});

describe("over real sockets", () => {
  let relay: TestRelay;
  let legacyOff: TestRelay;
  const open: RawConn[] = [];
  const raw = async (r: TestRelay = relay) => {
    const c = await openRaw(Number(new URL(r.url).port));
    open.push(c);
    return c;
  };

  beforeAll(() => {
    relay = startTestRelay({ TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES: "true", TOKEN_PLACE_RELAY_SERVER_TOKEN: TOKEN, RATE_LIMITS_ENABLED: "false" });
    legacyOff = startTestRelay({});
  });
  afterAll(async () => {
    for (const c of open) c.destroy();
    await Promise.all([relay.shutdown(), legacyOff.shutdown()]);
  });

  for (const path of SMALL_ROUTES) {
    test(`${path}: a declared body over ${LIMIT} bytes is refused 413 unread, and the connection closed`, async () => {
      const c = await raw();
      // Head only, wrong token on node routes: the size is refused before auth and before the body.
      c.send(postHead(path, 1_000_000, "X-Relay-Server-Token: wrong\r\n"));
      const r = await c.reply(5_000);
      expect(r.status).toBe(413);
      expect(r.headers.connection?.toLowerCase()).toBe("close");
      expect(JSON.parse(r.body)).toEqual({
        error: { message: `Request body exceeds this route's limit of ${LIMIT} bytes`, code: 413, type: "route_body_too_large", limit: LIMIT },
      });
      await c.closed;
    });
  }

  test("a body of exactly the limit is read and answered by the route", async () => {
    const body = JSON.stringify({ client_public_key: fakeKey() });
    const padded = body.slice(0, -1) + " ".repeat(LIMIT - body.length) + "}";
    expect(padded.length).toBe(LIMIT);
    const c = await raw();
    c.send(postHead("/api/v1/relay/responses/retrieve", LIMIT) + padded);
    const r = await c.reply(5_000);
    expect(r.status).toBe(404);
    expect(JSON.parse(r.body).error.message).toBe("No response available for the given public key");
  });

  test("a chunked body is cut at the limit while it streams", async () => {
    const c = await raw();
    c.send(chunkedHead("/retrieve"));
    const piece = " ".repeat(16 * 1024);
    c.send(chunk(`{"client_public_key":"${fakeKey()}"`));
    for (let i = 0; i < 4; i++) c.send(chunk(piece));
    // Never terminated: the relay answers once it has more than the limit.
    const r = await c.reply(5_000);
    expect(r.status).toBe(413);
    expect(JSON.parse(r.body).error).toMatchObject({ type: "route_body_too_large", limit: LIMIT });
    expect(r.headers.connection?.toLowerCase()).toBe("close");
  });

  test("a chunked body under the limit is read", async () => {
    const c = await raw();
    c.send(chunkedHead("/api/v1/relay/responses/retrieve"));
    c.send(chunk(`{"client_public_key":"${fakeKey()}"`));
    c.send(chunk(" ".repeat(1024) + "}"));
    c.send("0\r\n\r\n");
    const r = await c.reply(5_000);
    expect(r.status).toBe(404);
    expect(JSON.parse(r.body).error.message).toBe("No response available for the given public key");
  });

  test("progress keeps its own 413 body (spec §6.9), before auth, unread, with Connection: close", async () => {
    const c = await raw();
    c.send(postHead("/api/v1/relay/progress", 20_000));
    const r = await c.reply(5_000);
    expect(r.status).toBe(413);
    expect(JSON.parse(r.body)).toEqual({ error: { message: "Progress envelope too large", code: 413 } });
    expect(r.headers.connection?.toLowerCase()).toBe("close");
  });

  test("a switched-off legacy route answers its deprecation first (spec §12)", async () => {
    const c = await raw(legacyOff);
    c.send(postHead("/retrieve", 1_000_000));
    const r = await c.reply(5_000);
    expect(r.status).toBe(410);
    expect(JSON.parse(r.body).error.code).toBe("legacy_relay_endpoint_deprecated");
  });

  test("routes without a limit of their own still read up to RELAY_MAX_BODY_BYTES", async () => {
    const res = await relay.post("/api/v1/relay/requests", { server_public_key: fakeKey(), client_public_key: fakeKey(), chat_history: "x".repeat(200_000), cipherkey: "a2V5", iv: "aXY=" });
    expect(res.status).toBe(404); // unknown node: the body was read and validated
  });
});
