// Legacy /retrieve hands out an answer once (it leaves the store, as upstream's relay pops it): a
// large answer the connection does not take whole is queued again for the client's next /retrieve,
// and a slow but steady reader gets all of it past the idle timeout (src/http/delivery.ts).
import { afterEach, describe, expect, test } from "bun:test";
import { fakeKey, type TestRelay } from "../helpers/relay.ts";
import { python, slowClient } from "../helpers/slow-client.ts";
import { BROKER_BACKENDS, startBrokerRelay } from "./backends.ts";

/** About 3.9 MB of base64, varied like real ciphertext: more than the sockets' buffers hold. */
const bigCiphertext = () => Buffer.from(Array.from({ length: 2_900_000 }, (_, i) => (i * 131 + (i >> 7)) & 0xff)).toString("base64");

async function postJson(relay: TestRelay, path: string, body: unknown) {
  const res = await relay.post(path, body);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

let relay: TestRelay | undefined;
afterEach(async () => {
  await relay?.shutdown();
  relay = undefined;
});

for (const backend of BROKER_BACKENDS) {
  describe.skipIf(!python || backend.unavailable?.() !== undefined)(`legacy /retrieve of a large answer (${backend.name} store)`, () => {
    test("a client that leaves mid-body gets the whole answer on its next /retrieve", async () => {
      relay = await startBrokerRelay(backend, { RELAY_LONG_POLL_MS: "1000" });
      const clientKey = fakeKey("client");
      const chatHistory = bigCiphertext();
      expect((await postJson(relay, "/source", { client_public_key: clientKey, chat_history: chatHistory, cipherkey: "a2V5", iv: "aXY=" })).status).toBe(200);
      const left = await slowClient(relay, "/retrieve", { client_public_key: clientKey }, 50_000_000, 300_000);
      expect(left.status).toBe("200");
      expect(left.complete).toBe(false);
      await Bun.sleep(200);
      const again = await postJson(relay, "/retrieve", { client_public_key: clientKey });
      expect(again.status).toBe(200);
      expect(again.body.chat_history === chatHistory).toBe(true);
      // Delivered whole this time: nothing is left.
      expect((await postJson(relay, "/retrieve", { client_public_key: clientKey })).body).toEqual({ error: "No response available for the given public key" });
    }, 30_000);
  });
}

describe.skipIf(!python)("legacy /retrieve to a slow reader", () => {
  test("a steady reader slower than the idle timeout allows for the whole body still gets all of it", async () => {
    relay = await startBrokerRelay(BROKER_BACKENDS[0]!, { RELAY_IDLE_TIMEOUT_SECONDS: "2", RELAY_LONG_POLL_MS: "1000" });
    const clientKey = fakeKey("client");
    const chatHistory = bigCiphertext();
    expect((await postJson(relay, "/source", { client_public_key: clientKey, chat_history: chatHistory, cipherkey: "a2V5", iv: "aXY=" })).status).toBe(200);
    const got = await slowClient(relay, "/retrieve", { client_public_key: clientKey }, 1_000_000, Number.MAX_SAFE_INTEGER);
    expect(got.status).toBe("200");
    expect(got.complete).toBe(true);
    expect(got.body?.chat_history === chatHistory).toBe(true);
  }, 30_000);
});
