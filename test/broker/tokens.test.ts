import { describe, expect, test } from "bun:test";
import { createTokenCheck } from "../../src/common/tokens.ts";
import { fakeKey, job } from "../helpers/relay.ts";
import { BROKER_BACKENDS, startBrokerRelay } from "./backends.ts";

const OLD = "old-token-0123456789abcdef";
const NEW = "new-token-fedcba9876543210";
const unauthorized = { error: { message: "Missing or invalid relay server token", code: 401 } };

describe("token check", () => {
  test("accepts each configured token, refuses others, missing and near-misses", () => {
    const check = createTokenCheck([OLD, NEW]);
    expect(check(OLD)).toBe(true);
    expect(check(NEW)).toBe(true);
    expect(check(null)).toBe(false);
    expect(check("")).toBe(false);
    expect(check(OLD.slice(0, -1))).toBe(false);
    expect(check(OLD + "x")).toBe(false);
    expect(check(` ${OLD}`)).toBe(false);
  });

  test("no tokens configured means registration is open", () => {
    expect(createTokenCheck([])(null)).toBe(true);
  });
});

for (const backend of BROKER_BACKENDS) {
  const why = backend.unavailable?.();
  describe.skipIf(why !== undefined)(`token enforcement over HTTP, with rotation: ${backend.name}`, () => {
    test("/sink, /source and /stream/source need a valid token; client routes never do", async () => {
      const relay = await startBrokerRelay(backend, {
        RELAY_LONG_POLL_MS: "0",
        TOKEN_PLACE_RELAY_SERVER_TOKEN: OLD,
        TOKEN_PLACE_RELAY_SERVER_TOKENS: NEW,
      });
      try {
        const key = fakeKey();
        for (const headers of [{}, { "X-Relay-Server-Token": "wrong-token-000000000" }] as Record<string, string>[]) {
          for (const [path, body] of [
            ["/sink", { server_public_key: key }],
            ["/source", { client_public_key: "c", chat_history: "h", cipherkey: "k", iv: "v" }],
            ["/stream/source", { session_id: "s", chunk: "c" }],
          ] as const) {
            const res = await relay.post(path, body, headers);
            expect(res.status).toBe(401);
            expect(await res.json()).toEqual(unauthorized);
          }
        }
        // Both the old and the new token work during a rotation.
        expect((await relay.post("/sink", { server_public_key: key }, { "X-Relay-Server-Token": OLD })).status).toBe(200);
        expect((await relay.post("/sink", { server_public_key: key }, { "X-Relay-Server-Token": NEW })).status).toBe(200);
        expect((await relay.post("/faucet", job(key))).status).toBe(200);
        expect((await relay.get("/next_server")).status).toBe(200);
        expect((await relay.post("/retrieve", { client_public_key: "c" })).status).toBe(200);
        const metrics = await (await relay.get("/metrics")).text();
        expect(metrics).toContain('tokenplace_relay_rejections_total{reason="unauthorized"} 6');
      } finally {
        await relay.shutdown();
      }
    });

    test("after rotation completes the old token is refused", async () => {
      const relay = await startBrokerRelay(backend, { RELAY_LONG_POLL_MS: "0", TOKEN_PLACE_RELAY_SERVER_TOKENS: NEW });
      try {
        const res = await relay.post("/sink", { server_public_key: fakeKey() }, { "X-Relay-Server-Token": OLD });
        expect(res.status).toBe(401);
      } finally {
        await relay.shutdown();
      }
    });
  });
}
