// Held servers/poll and responses/retrieve: woken by the event they wait for, bounded by their hold,
// and never handing work or an answer to a peer that has gone (token.place API v1 relay spec §4, §6).
import { afterEach, describe, expect, test } from "bun:test";
import { ManualClock } from "../../src/clock.ts";
import { PACED_POLLS_ADDRESS_SHARE } from "../../src/config/defaults.ts";
import { MemoryV1Store } from "../../src/v1/index.ts";
import type { V1Store } from "../../src/v1/store.ts";
import { fakeKey, type TestRelay } from "../helpers/relay.ts";
import { BACKENDS, TEST_LIMITS } from "./backends.ts";
import { rid, startV1Relay, v1Peers } from "./helpers.ts";

const HOLD = { TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS: "5", RELAY_V1_RETRIEVE_HOLD_MS: "5000" };
let relay: TestRelay | undefined;
afterEach(async () => {
  await relay?.shutdown();
  relay = undefined;
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** POSTs, then leaves 50 ms later (the client closes its socket); resolves once it has left. */
async function postAndLeave(url: string, body: unknown): Promise<void> {
  const abort = new AbortController();
  const gone = fetch(url, { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" }, signal: abort.signal }).catch(() => "aborted");
  await sleep(50);
  abort.abort();
  expect(await gone).toBe("aborted");
  await sleep(50);
}

/** Resolves with the settled value, or "pending" if it has not settled yet. */
async function peek<T>(p: Promise<T>): Promise<T | "pending"> {
  return Promise.race([p, sleep(20).then(() => "pending" as const)]);
}

for (const backend of BACKENDS) {
  describe.skipIf(backend.unavailable?.() !== undefined)(`held API v1 requests (${backend.name} store)`, () => {
    test("a held poll is woken by a request for its node and gets the work item", async () => {
      relay = startV1Relay(HOLD, backend);
      const p = v1Peers(relay);
      const node = await p.register();
      const held = p.poll(node.key);
      await sleep(100);
      expect(await peek(held)).toBe("pending");
      const client = fakeKey("c");
      const id = rid();
      await p.request(node.key, client, id);
      const r = await held;
      expect(r.status).toBe(200);
      expect(r.body.request_id).toBe(id);
    });

    test("an empty hold ends at poll_wait_seconds with 'poll again now'", async () => {
      relay = startV1Relay({ TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS: "1" }, backend);
      const p = v1Peers(relay);
      const node = await p.register();
      const started = performance.now();
      const r = await p.poll(node.key);
      expect(performance.now() - started).toBeGreaterThanOrEqual(900);
      expect(r.body).toEqual({ message: "No requests available", next_ping_in_x_seconds: 0, poll_wait_seconds: 1 });
    });

    test("unregistering a held node answers its poll 404 at once", async () => {
      relay = startV1Relay(HOLD, backend);
      const p = v1Peers(relay);
      const node = await p.register();
      const held = p.poll(node.key);
      await sleep(50);
      await p.unregister(node.key, node.credential);
      expect((await held).status).toBe(404);
    });

    test("a held retrieve is woken by the answer, by progress and by a cancel", async () => {
      relay = startV1Relay(HOLD, backend);
      const p = v1Peers(relay);
      const node = await p.register();
      const client = fakeKey("c");
      const [a, b, c] = [rid(), rid(), rid()];
      for (const id of [a, b, c]) await p.request(node.key, client, id);
      for (let i = 0; i < 3; i++) await p.poll(node.key);

      const answer = p.retrieve(client, a);
      await sleep(50);
      expect(await peek(answer)).toBe("pending");
      await p.respond(client, a);
      expect((await answer).status).toBe(200);

      const progress = p.retrieve(client, b);
      await sleep(50);
      await p.progress(node.key, node.credential, client, b);
      const pr = await progress;
      expect(pr.status).toBe(202);
      expect(pr.body.encrypted_progress.request_id).toBe(b);

      const cancelled = p.retrieve(client, c);
      await sleep(50);
      await p.cancel(client, c);
      expect((await cancelled).status).toBe(410);
    });

    test("a poller that left before work arrived loses nothing: the next poll gets it", async () => {
      relay = startV1Relay(HOLD, backend);
      const p = v1Peers(relay);
      const node = await p.register();
      await postAndLeave(`${relay.url}/api/v1/relay/servers/poll`, { server_public_key: node.key });
      const id = rid();
      await p.request(node.key, fakeKey("c"), id);
      expect((await p.poll(node.key)).body.request_id).toBe(id);
    });

    test("beyond the hold capacity a poll answers at once, with half the lease rather than a tight loop", async () => {
      relay = startV1Relay({ ...HOLD, RELAY_MAX_LONG_POLLS: "1" }, backend);
      const p = v1Peers(relay);
      const a = await p.register();
      const b = await p.register();
      const held = p.poll(a.key);
      await sleep(50);
      const r = await p.poll(b.key);
      expect(r.body).toEqual({ message: "No requests available", next_ping_in_x_seconds: 15, poll_wait_seconds: 5 });
      expect(await peek(held)).toBe("pending");
    });

    test("clients holding retrieves never take the hold slots of compute nodes", async () => {
      relay = startV1Relay({ ...HOLD, RELAY_MAX_LONG_POLLS: "2" }, backend);
      const p = v1Peers(relay);
      const node = await p.register();
      const client = fakeKey("c");
      const ids = [rid(), rid(), rid()];
      for (const id of ids) await p.request(node.key, client, id);
      const retrieves = ids.map((id) => p.retrieve(client, id));
      await sleep(100);
      // The third retrieve found the client budget full and answered at once; the node still holds.
      const held = p.poll(node.key, { capabilities: null });
      const idle = await p.register();
      const idlePoll = p.poll(idle.key);
      await sleep(100);
      expect((await held).body.request_id).toBe(ids[0]);
      expect(await peek(idlePoll)).toBe("pending");
      for (const id of ids) await p.cancel(client, id);
      await Promise.all(retrieves);
    });

    test("past its share of held retrieves an address is paced with 429 and Retry-After, never a tight loop", async () => {
      relay = startV1Relay({ ...HOLD, RELAY_MAX_HOLDS_PER_IP: "1" }, backend);
      const p = v1Peers(relay);
      const node = await p.register();
      const client = fakeKey("c");
      const [a, b] = [rid(), rid()];
      for (const id of [a, b]) await p.request(node.key, client, id);
      const held = p.retrieve(client, a);
      await sleep(100);
      const paced = await p.retrieve(client, b);
      expect(paced.status).toBe(429);
      expect(paced.headers.get("retry-after")).toBe("1");
      expect(paced.body.error.code).toBe("rate_limit_exceeded");
      // One refusal, counted once (by the hold, not again by the error answer).
      expect(await (await relay.get("/metrics")).text()).toMatch(/rejections_total\{reason="long_poll_per_ip_client"\} 1\n/);
      expect(await peek(held)).toBe("pending");
      await p.cancel(client, a);
      expect((await held).status).toBe(410);
    });

    test("a paced retrieve hands over an answer that arrived during its pace; past the address's share of paces the 429 comes at once and closes", async () => {
      // 16 connections: an address may pace PACED_POLLS_ADDRESS_SHARE of them.
      relay = startV1Relay({ ...HOLD, RELAY_MAX_HOLDS_PER_IP: "1", RELAY_MAX_CONNECTIONS: "16" }, backend);
      const p = v1Peers(relay);
      const node = await p.register();
      const client = fakeKey("c");
      const share = Math.ceil(16 * PACED_POLLS_ADDRESS_SHARE);
      const ids = Array.from({ length: share + 2 }, () => rid()) as [string, string, ...string[]];
      for (const id of ids) await p.request(node.key, client, id);
      for (let i = 0; i < ids.length; i++) await p.poll(node.key);
      const held = p.retrieve(client, ids[0]);
      await sleep(100);
      // Over the hold share: paced. Its answer arrives mid-pace and is handed over at its end.
      const t0 = performance.now();
      const paced = p.retrieve(client, ids[1]);
      await sleep(100);
      expect(await peek(paced)).toBe("pending");
      await p.respond(client, ids[1]);
      const got = await paced;
      expect(got.status).toBe(200);
      expect(got.body.chat_history).toBe("YW5zd2Vy");
      // Woken by the pace's end, not at once: a crowd cannot re-poll faster than once a pace.
      expect(performance.now() - t0).toBeGreaterThanOrEqual(900);
      // The address's share of paces at once: one more is answered at once, and closed.
      const pacing = ids.slice(2).map((id) => p.retrieve(client, id));
      await sleep(100);
      const full = await relay.post("/api/v1/relay/responses/retrieve", { client_public_key: client, request_id: ids[2] });
      expect(full.status).toBe(429);
      expect(full.headers.get("retry-after")).toBe("1");
      expect(full.headers.get("connection")).toBe("close");
      for (const r of await Promise.all(pacing)) expect(r.status).toBe(429);
      const text = await (await relay.get("/metrics")).text();
      expect(text).toMatch(/tokenplace_relay_rejections_total\{reason="paced_per_ip_client"\} 1\b/);
      await p.cancel(client, ids[0]);
      expect((await held).status).toBe(410);
    });

    test("draining answers held polls at once with next ping 1", async () => {
      relay = startV1Relay(HOLD, backend);
      const p = v1Peers(relay);
      const node = await p.register();
      const held = p.poll(node.key);
      await sleep(50);
      const stopping = relay.shutdown();
      expect((await held).body.next_ping_in_x_seconds).toBe(1);
      await stopping;
      relay = undefined;
    });
  });
}

/** A store whose claim/retrieve finish only after the test's client has gone. */
function slowHandOver(inner: V1Store, gate: { claim?: Promise<void>; retrieve?: Promise<void> }): V1Store {
  return Object.assign(Object.create(inner) as V1Store, {
    async claim(...args: Parameters<V1Store["claim"]>) {
      const r = await inner.claim(...args);
      if (r.kind === "work" && gate.claim) await gate.claim;
      return r;
    },
    async retrieve(...args: Parameters<V1Store["retrieve"]>) {
      const r = await inner.retrieve(...args);
      if (r.kind === "answer" && gate.retrieve) await gate.retrieve;
      return r;
    },
  });
}

describe("a failed hand-over puts the item back", () => {
  test("work claimed for a poller that left is queued again at the head", async () => {
    let open!: () => void;
    const gate = { claim: new Promise<void>((r) => (open = r)) };
    let inner!: MemoryV1Store;
    relay = startV1Relay({}, BACKENDS[0], {
      v1Store: (events) => slowHandOver((inner = new MemoryV1Store(TEST_LIMITS, new ManualClock(), events)), gate),
    });
    const p = v1Peers(relay);
    const node = await p.register();
    const id = rid();
    await p.request(node.key, fakeKey("c"), id);
    await postAndLeave(`${relay.url}/api/v1/relay/servers/poll`, { server_public_key: node.key });
    open();
    await sleep(50);
    expect((await inner.stats()).inFlight).toBe(0);
    expect((await p.poll(node.key)).body.request_id).toBe(id);
  });

  test("an answer taken for a client that left is stored again", async () => {
    let open!: () => void;
    const gate = { retrieve: new Promise<void>((r) => (open = r)) };
    relay = startV1Relay({}, BACKENDS[0], {
      v1Store: (events) => slowHandOver(new MemoryV1Store(TEST_LIMITS, new ManualClock(), events), gate),
    });
    const p = v1Peers(relay);
    const node = await p.register();
    const client = fakeKey("c");
    const id = rid();
    await p.request(node.key, client, id);
    await p.poll(node.key);
    await p.respond(client, id);
    await postAndLeave(`${relay.url}/api/v1/relay/responses/retrieve`, { client_public_key: client, request_id: id });
    open();
    await sleep(50);
    expect((await p.retrieve(client, id)).status).toBe(200);
  });
});
