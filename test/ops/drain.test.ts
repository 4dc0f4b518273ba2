import { afterEach, describe, expect, test } from "bun:test";
import { fakeKey, job } from "../helpers/relay.ts";
import { spawnRelay, type Spawned } from "../helpers/spawn.ts";

let relay: Spawned | undefined;
afterEach(() => relay?.kill());

const post = (url: string, body: unknown, init: RequestInit = {}) =>
  fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), ...init });

describe("graceful shutdown on SIGTERM", () => {
  test("readiness flips, held long-polls answer at once, an in-flight upload finishes, exit 0", async () => {
    relay = await spawnRelay({
      TOKENPLACE_RELAY_ONLY: "true",
      TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES: "true",
      RELAY_LONG_POLL_MS: "8000",
      RELAY_SHUTDOWN_DELAY_MS: "400",
      RELAY_SHUTDOWN_GRACE_MS: "5000",
      LOG_LEVEL: "info",
    });
    const { url } = relay;
    const node = fakeKey("node");
    const heldSink = post(`${url}/sink`, { server_public_key: node });
    const heldRetrieve = post(`${url}/retrieve`, { client_public_key: fakeKey("client") });
    await Bun.sleep(200);

    // An upload that is half sent when the signal arrives.
    const body = JSON.stringify(job(node, { chat_history: "z".repeat(64 * 1024) }));
    const enc = new TextEncoder();
    let push!: (s: string | null) => void;
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        push = (s) => (s === null ? controller.close() : controller.enqueue(enc.encode(s)));
      },
    });
    const upload = fetch(`${url}/faucet`, { method: "POST", body: stream, duplex: "half" } as RequestInit);
    push(body.slice(0, 1000));
    await Bun.sleep(100);

    const t0 = performance.now();
    relay.proc.kill("SIGTERM");
    const sinkRes = await heldSink;
    const drainAnswerMs = performance.now() - t0;
    // Drain pace: come back in a second (through the Service, to another pod), not in a tight loop.
    expect(await sinkRes.json()).toEqual({ next_ping_in_x_seconds: 1 });
    expect(await (await heldRetrieve).json()).toEqual({ error: "No response available for the given public key" });
    expect(drainAnswerMs).toBeLessThan(3000); // far below the 8 s hold

    const ready = await fetch(`${url}/healthz`);
    expect(ready.status).toBe(503);
    expect(((await ready.json()) as { status: string }).status).toBe("draining");
    // A node polling during the drain delay is answered at once with the drain pace.
    const t1 = performance.now();
    expect(await (await post(`${url}/sink`, { server_public_key: node })).json()).toEqual({ next_ping_in_x_seconds: 1 });
    expect(performance.now() - t1).toBeLessThan(1000);

    push(body.slice(1000));
    push(null);
    const uploaded = await upload;
    expect(uploaded.status).toBe(200);
    expect(await uploaded.json()).toEqual({ message: "Request received" });

    const code = await relay.closed();
    expect(code).toBe(0);
    expect(relay.lines.some((l) => l.includes('"msg":"draining"'))).toBe(true);
    expect(relay.lines.some((l) => l.includes('"msg":"stopped"'))).toBe(true);
    // The job accepted during the drain dies with the in-memory state, and the log says so.
    expect(relay.lines.find((l) => l.includes("state discarded at stop"))).toContain('"queuedJobs":1');
    // After exit nothing listens any more.
    expect(await fetch(`${url}/livez`).then(() => "up", () => "down")).toBe("down");
  });

  test("a request still running when the grace period ends is cut and the process still exits 0", async () => {
    relay = await spawnRelay({ TOKENPLACE_RELAY_ONLY: "true", TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES: "true", RELAY_SHUTDOWN_GRACE_MS: "500", LOG_LEVEL: "info" });
    let push!: (s: string) => void;
    const stream = new ReadableStream<Uint8Array>({ start: (c) => void (push = (s) => c.enqueue(new TextEncoder().encode(s))) });
    const stuck = fetch(`${relay.url}/faucet`, { method: "POST", body: stream, duplex: "half" } as RequestInit).then(
      (r) => r.status,
      () => "cut",
    );
    push("{");
    await Bun.sleep(100);
    const t0 = performance.now();
    relay.proc.kill("SIGTERM");
    expect(await relay.closed()).toBe(0);
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(await stuck).toBe("cut");
    expect(relay.lines.some((l) => l.includes("grace period over"))).toBe(true);
  });
});
