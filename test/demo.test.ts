// End to end: the demo's API v1 compute node and client against a real relay child process
// (`bun run src/main.ts`, real sockets). Proves a full exchange with encrypted progress, a cancel
// the node learns about from servers/control, answers that never mix between clients, that every
// body the relay received or returned was ciphertext it could not read, and that `npm run demo`
// itself passes.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createClient, type Outcome } from "../src/demo/client.ts";
import { generateKeyPair, openJson, type KeyPair } from "../src/demo/crypto.ts";
import { fakeAnswer } from "../src/demo/fake-model.ts";
import type { WireRecord } from "../src/demo/http.ts";
import { createComputeNode, type ComputeNode, type NodeEvent } from "../src/demo/node.ts";
import { ROUTES, type ChatMessage, type Progress } from "../src/demo/protocol.ts";
import { REPO_ROOT, startRelay, type ChildServer } from "../src/demo/relay-process.ts";

const TOKEN = "demo-test-token-0123456789";
let relay: ChildServer;
let node: ComputeNode;
let nodeKeys: KeyPair;
const nodeWire: WireRecord[] = [];
const nodeEvents: NodeEvent[] = [];

beforeAll(async () => {
  relay = await startRelay({ TOKEN_PLACE_RELAY_SERVER_TOKEN: TOKEN });
  nodeKeys = await generateKeyPair();
  node = await createComputeNode({
    relayUrl: relay.url,
    token: TOKEN,
    keys: nodeKeys,
    stepMs: 40,
    wireTap: (r) => nodeWire.push(r),
    onEvent: (e) => nodeEvents.push(e),
  });
  node.start();
  await until(() => nodeEvents.some((e) => e.type === "registered"), "the node registered");
});

afterAll(async () => {
  await node?.stop();
  await relay?.stop();
});

async function until(done: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  for (const end = Date.now() + timeoutMs; !done(); await Bun.sleep(10)) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
  }
}

const chat = (prompt: string): ChatMessage[] => [
  { role: "system", content: "You are a helpful assistant." },
  { role: "user", content: prompt },
];

/** Every body that crossed the relay, both directions, must be free of every secret. */
function expectOnlyCiphertext(records: WireRecord[], secrets: string[]): void {
  expect(records.length).toBeGreaterThan(0);
  for (const r of records) {
    const body = JSON.stringify([r.request ?? null, r.response]);
    for (const secret of secrets) expect(body).not.toContain(secret);
  }
}

const signal = () => AbortSignal.timeout(15_000);

describe("demo node + client through the relay (API v1 E2EE)", () => {
  test("full exchange: servers/next picks the node, the answer decrypts, progress arrives, the relay saw only ciphertext", async () => {
    const clientWire: WireRecord[] = [];
    const client = await createClient({ relayUrl: relay.url, wireTap: (r) => clientWire.push(r), retrieveIntervalMs: 20 });
    const picked = await client.pickNode(signal());
    expect(picked.server_public_key).toBe(nodeKeys.publicKeyB64);

    const prompt = "the quick brown fox jumps over the lazy dog";
    const sub = await client.submit(nodeKeys.publicKeyB64, chat(prompt), signal());
    const progress: Progress[] = [];
    const outcome = await client.awaitAnswer(sub, { signal: signal(), onProgress: (p) => progress.push(p) });
    expect(outcome.kind).toBe("answer");
    const response = (outcome as Extract<Outcome, { kind: "answer" }>).response;
    expect(response).toMatchObject({ message: { role: "assistant", content: fakeAnswer(chat(prompt)) }, finish_reason: "stop" });

    // The relay advertises progress, the node published it, the client decrypted it in order.
    expect(nodeEvents.find((e) => e.type === "registered")).toMatchObject({ progress: true, credentialIssued: true });
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.map((p) => p.sequence)).toEqual([...progress.map((p) => p.sequence)].sort((a, b) => a - b));
    expect(nodeEvents.some((e) => e.type === "control" && e.requestId === sub.requestId && e.status === "active")).toBe(true);

    // What the node polled is byte-for-byte what the client sealed; it opens only with the node's key.
    const item = nodeWire.find((r) => r.path === ROUTES.poll && r.response.request_id === sub.requestId);
    expect(item?.response.chat_history).toBe(sub.sent.ciphertext);
    expect(await openJson(nodeKeys, sub.sent)).toMatchObject({ request_id: sub.requestId, api_v1_request: { messages: chat(prompt) } });
    // What the client retrieved is byte-for-byte what the node posted (the seven keys of the answer).
    const posted = nodeWire.find((r) => r.path === ROUTES.responses && r.request?.request_id === sub.requestId);
    expect(Object.keys(posted?.request ?? {}).sort()).toEqual(["chat_history", "cipherkey", "client_public_key", "iv", "protocol", "request_id", "version"]);
    const retrieved = clientWire.find((r) => r.path === ROUTES.retrieve && r.status === 200);
    expect(retrieved?.response.chat_history).toBe(posted?.request?.chat_history);

    expectOnlyCiphertext([...clientWire, ...nodeWire], [prompt, fakeAnswer(chat(prompt)), "quick brown", "jumps over"]);
  });

  test("cancel: the client cancels in-flight work with its cancel_token; control tells the node, which stops, acknowledges and posts nothing", async () => {
    const client = await createClient({ relayUrl: relay.url, retrieveIntervalMs: 20 });
    const prompt = Array.from({ length: 50 }, (_, i) => `word${i}`).join(" "); // a job of about 2 s
    const sub = await client.submit(nodeKeys.publicKeyB64, chat(prompt), signal());
    const pending = client.awaitAnswer(sub, { signal: signal() });
    pending.catch(() => undefined);
    await until(() => nodeEvents.some((e) => e.type === "control" && e.requestId === sub.requestId && e.status === "active"), "the node holds the job");

    const cancelled = await client.cancel(sub, signal());
    expect(cancelled).toMatchObject({ status: "cancelled", request_id: sub.requestId, removed_from_queue: 0 });
    const outcome = await pending;
    expect(outcome).toMatchObject({ kind: "ended", status: "cancelled", reason: "requester_cancelled" });

    await until(() => nodeEvents.some((e) => e.type === "stopped" && e.requestId === sub.requestId), "the node stopped the job");
    const forJob = nodeEvents.filter((e) => "requestId" in e && e.requestId === sub.requestId);
    expect(forJob.some((e) => e.type === "control" && e.status === "cancelled" && !e.acknowledge)).toBe(true);
    expect(forJob.some((e) => e.type === "control" && e.acknowledge)).toBe(true);
    expect(forJob.find((e) => e.type === "stopped")).toMatchObject({ status: "cancelled" });
    expect(forJob.some((e) => e.type === "answered")).toBe(false);
    expect(nodeWire.some((r) => r.path === ROUTES.responses && r.request?.request_id === sub.requestId)).toBe(false);

    // A cancel proof works once, and only the right one works at all.
    await expect(client.cancel(sub, signal())).rejects.toThrow("403");
  });

  test("a wrong cancel_token is refused and the request still completes", async () => {
    const client = await createClient({ relayUrl: relay.url, retrieveIntervalMs: 20 });
    const sub = await client.submit(nodeKeys.publicKeyB64, chat("cancel me if you can"), signal());
    await expect(client.cancel({ ...sub, cancelToken: "not-the-token" }, signal())).rejects.toThrow("403");
    const outcome = await client.awaitAnswer(sub, { signal: signal() });
    expect(outcome).toMatchObject({ kind: "answer", response: { message: { content: fakeAnswer(chat("cancel me if you can")) } } });
  });

  test("requests queued for one node by several clients each come back to their own client", async () => {
    const prompts = ["alpha beta gamma", "one two three four", "red green blue"];
    const outcomes = await Promise.all(
      prompts.map(async (p) => {
        const client = await createClient({ relayUrl: relay.url, retrieveIntervalMs: 20 });
        const sub = await client.submit(nodeKeys.publicKeyB64, chat(p), signal());
        return client.awaitAnswer(sub, { signal: signal() });
      }),
    );
    outcomes.forEach((o, i) => expect(o).toMatchObject({ kind: "answer", response: { message: { content: fakeAnswer(chat(prompts[i]!)) } } }));
  });

  test("a node without the registration token is refused with 401 and never registers", async () => {
    const records: WireRecord[] = [];
    const intruder = await createComputeNode({ relayUrl: relay.url, wireTap: (r) => records.push(r) });
    intruder.start();
    await until(() => records.length > 0, "the intruder tried to register");
    await intruder.stop();
    expect(records[0]).toMatchObject({ path: ROUTES.register, status: 401, response: { error: { message: "Missing or invalid relay server token", code: 401 } } });
    expect(intruder.stats.lastError).toContain("401");
    expect(records.some((r) => r.status === 200)).toBe(false);
  });

  test("the node handled every job without errors, and unregistering takes it out of selection", async () => {
    expect(node.stats.lastError).toBeUndefined();
    expect(node.stats.answered).toBeGreaterThanOrEqual(5);
    expect(node.stats.stopped).toBe(1);
    await node.stop();
    expect(nodeEvents.at(-1)).toMatchObject({ type: "unregistered", httpStatus: 200 });
    const client = await createClient({ relayUrl: relay.url });
    await expect(client.pickNode(signal())).rejects.toThrow("503");
  });
});

test("`npm run demo` passes against its own relay child", async () => {
  const proc = Bun.spawn([process.execPath, "run", "src/demo/run.ts"], {
    cwd: REPO_ROOT,
    env: { ...process.env, RELAY_URL: "", TOKEN_PLACE_RELAY_SERVER_TOKEN: TOKEN },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  expect(`${out}\n${err}`).toContain("Demo passed");
  expect(out).not.toContain("FAILED");
  expect(code).toBe(0);
}, 60_000);
