// End to end: the demo node and client against a real relay child process (`bun run src/main.ts`).
// Proves the streamed answer arrives complete and in order, and that every body the relay
// received or returned was ciphertext it could not read.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { DemoClient } from "../src/demo/client.ts";
import { decryptJson, generateKeyPair, type ChatMessage, type DemoKeyPair } from "../src/demo/crypto.ts";
import { fakeAnswer, fakeAnswerPieces } from "../src/demo/fake-model.ts";
import type { WireRecord } from "../src/demo/http.ts";
import { DemoNode } from "../src/demo/node.ts";
import { startRelay, type ChildServer } from "../src/demo/relay-process.ts";

const TOKEN = "demo-test-token-0123456789";
let relay: ChildServer;
let node: DemoNode;
let nodeKeys: DemoKeyPair;
const wire: WireRecord[] = [];

beforeAll(async () => {
  relay = await startRelay({ TOKEN_PLACE_RELAY_SERVER_TOKEN: TOKEN });
  nodeKeys = await generateKeyPair();
  node = await DemoNode.create({ relayUrl: relay.url, token: TOKEN, keys: nodeKeys, wireTap: (r) => wire.push(r) });
  void node.start();
});

afterAll(async () => {
  await node?.stop();
  await relay?.stop();
});

const chat = (prompt: string): ChatMessage[] => [
  { role: "system", content: "You are a helpful assistant." },
  { role: "user", content: prompt },
];

/** Every body that crossed the relay, both directions, as text. */
const wireText = (records: WireRecord[]) => records.map((r) => JSON.stringify([r.request ?? null, r.response]));

function expectOnlyCiphertext(records: WireRecord[], secrets: string[]): void {
  expect(records.length).toBeGreaterThan(0);
  for (const body of wireText(records)) for (const secret of secrets) expect(body).not.toContain(secret);
}

describe("demo node + client through a relay", () => {
  test("streamed exchange: chunks decrypt complete and in order; the relay saw only ciphertext", async () => {
    const clientWire: WireRecord[] = [];
    const client = await DemoClient.create({ relayUrl: relay.url, wireTap: (r) => clientWire.push(r) });
    const prompt = "the quick brown fox jumps over the lazy dog";
    const seen: string[] = [];
    const result = await client.chat(chat(prompt), { stream: true, timeoutMs: 15_000, onChunk: (t) => seen.push(t) });

    const expected = fakeAnswerPieces(chat(prompt));
    expect(expected.length).toBeGreaterThan(5);
    expect(result.chunks).toEqual(expected);
    expect(seen).toEqual(expected);
    expect(result.text).toBe(fakeAnswer(chat(prompt)));

    // What the node got from /sink is byte-for-byte what the client sealed, not the plaintext...
    const job = wire.find((r) => r.path === "/sink" && r.response.chat_history === result.sent.chat_history);
    expect(job).toBeDefined();
    expect(job!.response.stream).toBe(true);
    expect(result.sent.chat_history).not.toBe(JSON.stringify(chat(prompt)));
    // ...and it opens only with the node's private key.
    expect(await decryptJson(nodeKeys.privateKey, result.sent)).toEqual(chat(prompt));

    // Every stream chunk the relay handed back was an envelope, never text.
    const drained = clientWire.filter((r) => r.path === "/stream/retrieve").flatMap((r) => (r.response.chunks as unknown[]) ?? []);
    expect(drained).toHaveLength(expected.length);
    for (const c of drained) expect(Object.keys(c as object).sort()).toEqual(["chat_history", "cipherkey", "iv"]);
    expectOnlyCiphertext([...clientWire, ...wire], [prompt, result.text, "quick brown"]);
  });

  test("single-answer exchange via /source and /retrieve", async () => {
    const clientWire: WireRecord[] = [];
    const client = await DemoClient.create({ relayUrl: relay.url, wireTap: (r) => clientWire.push(r) });
    const prompt = "answer me all at once please";
    const result = await client.chat(chat(prompt), { stream: false, timeoutMs: 15_000 });
    expect(result.text).toBe(fakeAnswer(chat(prompt)));
    expect(result.chunks).toEqual([]);
    const answer = clientWire.find((r) => r.path === "/retrieve" && typeof r.response.chat_history === "string");
    expect(answer).toBeDefined();
    expectOnlyCiphertext([...clientWire, ...wire], [prompt, result.text]);
  });

  test("concurrent clients each get their own answer (GCM envelopes)", async () => {
    const prompts = ["alpha beta gamma", "one two three four", "red green blue"];
    const results = await Promise.all(
      prompts.map(async (p, i) => {
        const client = await DemoClient.create({ relayUrl: relay.url, mode: "AES-GCM" });
        return client.chat(chat(p), { stream: i !== 1, timeoutMs: 15_000 });
      }),
    );
    results.forEach((r, i) => expect(r.text).toBe(fakeAnswer(chat(prompts[i]!))));
  });

  test("a node without the registration token is refused with 401 and never registers", async () => {
    const records: WireRecord[] = [];
    const intruder = await DemoNode.create({ relayUrl: relay.url, wireTap: (r) => records.push(r) });
    const loop = intruder.start();
    for (let i = 0; i < 100 && records.length === 0; i++) await Bun.sleep(10);
    await intruder.stop();
    await loop;
    expect(records[0]?.status).toBe(401);
    expect(records[0]?.response).toEqual({ error: { message: "Missing or invalid relay server token", code: 401 } });
    expect(intruder.lastError).toContain("401");
    expect(intruder.jobsHandled).toBe(0);
  });

  test("the legitimate node handled every job and reported no errors", () => {
    expect(node.jobsHandled).toBeGreaterThanOrEqual(5);
    expect(node.lastError).toBeUndefined();
  });
});
