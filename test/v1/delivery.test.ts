// A retrieve takes its answer out of the store (spec §6.10): a large answer the connection does not
// take whole must come back on the next retrieve, and a slow but steady reader must get all of it
// even when the body takes longer than the server's idle timeout (src/http/delivery.ts).
import { afterEach, describe, expect, test } from "bun:test";
import type { TestRelay } from "../helpers/relay.ts";
import { fakeKey } from "../helpers/relay.ts";
import { BACKENDS } from "./backends.ts";
import { rid, startV1Relay, v1Peers } from "./helpers.ts";

/**
 * A client with a 4 KiB receive buffer (so the relay's writes really wait for it), in Python because
 * neither fetch nor Bun's sockets can set SO_RCVBUF: it sends one retrieve, reads at most `stopAfter`
 * bytes at `rate` bytes/s, and prints what it read as JSON.
 */
const SLOW_CLIENT = `
import json, socket, sys, time
port, body, rate, stop_after = int(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096); s.connect(("127.0.0.1", port))
s.sendall(b"POST /api/v1/relay/responses/retrieve HTTP/1.1\\r\\nHost: t\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
data = b""; t0 = time.time()
while len(data) < stop_after:
    d = s.recv(16384)
    if not d: break
    data += d
    if data.endswith(b"\\r\\n0\\r\\n\\r\\n"): break
    time.sleep(max(0.0, len(data) / rate - (time.time() - t0)))
s.close()
head, _, rest = data.partition(b"\\r\\n\\r\\n")
complete = rest.endswith(b"\\r\\n0\\r\\n\\r\\n")
text = b""
if complete:
    while rest:
        size, _, rest = rest.partition(b"\\r\\n"); n = int(size, 16)
        if n == 0: break
        text += rest[:n]; rest = rest[n + 2:]
print(json.dumps({"status": head.split(b" ")[1].decode() if head else "", "read": len(data), "complete": complete, "chat_history": json.loads(text)["chat_history"] if complete else None}))
`;

const python = Bun.which("python3");
if (!python) {
  if (process.env.CI === "true") throw new Error("python3 is required for the slow-reader delivery tests");
  console.warn("SKIP slow-reader delivery tests: python3 is not installed");
}

async function slowClient(relay: TestRelay, body: unknown, rate: number, stopAfter: number) {
  const proc = Bun.spawn([python!, "-c", SLOW_CLIENT, String(relay.port), JSON.stringify(body), String(rate), String(stopAfter)], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`slow client failed: ${err}`);
  return JSON.parse(out) as { status: string; read: number; complete: boolean; chat_history: string | null };
}

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
      const left = await slowClient(relay, { client_public_key: clientKey, request_id: requestId }, 50_000_000, 300_000);
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
    const got = await slowClient(relay, { client_public_key: clientKey, request_id: requestId }, 1_000_000, Number.MAX_SAFE_INTEGER);
    expect(got.status).toBe("200");
    expect(got.complete).toBe(true);
    expect(got.chat_history === chatHistory).toBe(true);
    expect((await p.retrieve(clientKey, requestId)).status).toBe(404);
  }, 30_000);
});
