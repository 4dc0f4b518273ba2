// A retrieve takes its answer out of the store (spec §6.10): a large answer the connection does not
// take whole must come back on the next retrieve, and a slow but steady reader must get all of it
// even when the body takes longer than the server's idle timeout (src/http/delivery.ts).
import { afterEach, describe, expect, test } from "bun:test";
import type { TestRelay } from "../helpers/relay.ts";
import { fakeKey } from "../helpers/relay.ts";
import { BACKENDS } from "./backends.ts";
import { rid, startV1Relay, v1Peers } from "./helpers.ts";
import { python, slowClient } from "../helpers/slow-client.ts";

/** An answer of about 4 MB (more than the sockets' buffers hold) waiting for `clientKey`'s `requestId`. */
async function bigAnswer(relay: TestRelay, clientKey: string, requestId: string) {
  const p = v1Peers(relay);
  const node = await p.register();
  expect((await p.request(node.key, clientKey, requestId)).status).toBe(200);
  expect((await p.poll(node.key)).status).toBe(200);
  // Base64 of a varied pattern, as real ciphertext is (not one repeated character).
  const chatHistory = Buffer.from(Array.from({ length: 2_900_000 }, (_, i) => (i * 131 + (i >> 7)) & 0xff)).toString("base64");
  expect((await p.respond(clientKey, requestId, { chat_history: chatHistory })).status).toBe(200);
  return { p, chatHistory };
}

const RETRIEVE = "/api/v1/relay/responses/retrieve";
let relay: TestRelay | undefined;
afterEach(async () => {
  await relay?.shutdown();
  relay = undefined;
});

for (const backend of BACKENDS) {
  describe.skipIf(!python || backend.unavailable?.() !== undefined)(`delivering a large answer (${backend.name} store)`, () => {
    test("a client that leaves mid-body gets the whole answer on its next retrieve", async () => {
      relay = startV1Relay({}, backend);
      const clientKey = fakeKey("client");
      const requestId = rid();
      const { p, chatHistory } = await bigAnswer(relay, clientKey, requestId);
      const left = await slowClient(relay, RETRIEVE, { client_public_key: clientKey, request_id: requestId }, 50_000_000, 300_000);
      expect(left.status).toBe("200");
      expect(left.complete).toBe(false);
      await Bun.sleep(200);
      const again = await p.retrieve(clientKey, requestId);
      expect(again.status).toBe(200);
      expect(again.body.chat_history).toBe(chatHistory);
      // Taken whole this time: it is gone now, as a delivered answer is.
      expect((await p.retrieve(clientKey, requestId)).status).toBe(404);
    }, 30_000);
  });
}

describe.skipIf(!python)("delivering a large answer to a slow reader", () => {
  test("a steady reader slower than the idle timeout allows for the whole body still gets all of it", async () => {
    // 2 s idle timeout; the ~4 MB body read at 1 MB/s takes ~4 s.
    relay = startV1Relay({ RELAY_IDLE_TIMEOUT_SECONDS: "2", RELAY_LONG_POLL_MS: "1000" });
    const clientKey = fakeKey("client");
    const requestId = rid();
    const { p, chatHistory } = await bigAnswer(relay, clientKey, requestId);
    const got = await slowClient(relay, RETRIEVE, { client_public_key: clientKey, request_id: requestId }, 1_000_000, Number.MAX_SAFE_INTEGER);
    expect(got.status).toBe("200");
    expect(got.complete).toBe(true);
    expect(got.body?.chat_history === chatHistory).toBe(true);
    expect((await p.retrieve(clientKey, requestId)).status).toBe(404);
  }, 30_000);
});
