/**
 * Proxy mode end to end: the relay as its own process in front of a real upstream process that
 * streams SSE with delays. No speed assertions: "incremental" is proved by ordering (an event
 * reaches the client while the upstream is provably still holding the next one).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Spawned } from "../helpers/spawn.ts";
import { eventually, metricValue, readEvents, startFixture, startProxyRelay, type Fixture } from "./helpers.ts";

let fx: Fixture;
let relay: Spawned;

beforeAll(async () => {
  fx = await startFixture();
  relay = await startProxyRelay(fx.url, {
    RELAY_UPSTREAM_FIRST_BYTE_TIMEOUT_MS: "1500",
    RELAY_UPSTREAM_IDLE_TIMEOUT_MS: "2500",
  });
});

afterAll(async () => {
  relay?.kill("SIGKILL");
  await relay?.proc.exited;
  await fx?.stop();
});

const scrape = async () => (await fetch(`${relay.url}/metrics`)).text();

describe("SSE through the relay", () => {
  test("an event reaches the client while the upstream still holds the next one (no buffering)", async () => {
    const res = await fetch(`${relay.url}/api/sse?n=5&gap=20&gate=1&id=gate1`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/event-stream");
    let sentWhenFirstArrived = -1;
    const { events, error } = await readEvents(res, async (e) => {
      if (e.i === 0) {
        sentWhenFirstArrived = (await fx.state("gate1")).sent;
        await fetch(`${fx.url}/__ctl/release?id=gate1`);
      }
    });
    expect(error).toBeUndefined();
    // The upstream had sent exactly one event and was blocked on the gate when the client got it.
    expect(sentWhenFirstArrived).toBe(1);
    expect(events.map((e) => e.i)).toEqual([0, 1, 2, 3, 4]);
  });

  test("events spaced 300 ms apart arrive incrementally and in order", async () => {
    const res = await fetch(`${relay.url}/v1/sse?n=5&gap=300&id=timed1`);
    const { events, error } = await readEvents(res);
    expect(error).toBeUndefined();
    expect(events.map((e) => e.i)).toEqual([0, 1, 2, 3, 4]);
    // The first event is in the client's hands before the upstream even sends the third.
    expect(events[0]!.arrivedAt).toBeLessThan(events[2]!.sentAt);
    // Not delivered as one burst at the end.
    expect(events[4]!.arrivedAt - events[0]!.arrivedAt).toBeGreaterThan(600);
    for (let k = 1; k < events.length; k++) expect(events[k]!.arrivedAt).toBeGreaterThanOrEqual(events[k - 1]!.arrivedAt);
  });

  test("a client that disconnects aborts the upstream request promptly", async () => {
    const ac = new AbortController();
    const res = await fetch(`${relay.url}/api/sse?n=1000&gap=100&id=abort1`, { signal: ac.signal });
    const { events } = await readEvents(res, (_e, all) => all.length === 2);
    expect(events.length).toBe(2);
    ac.abort();
    expect(await eventually(async () => (await fx.state("abort1")).aborted, 5_000)).toBe(true);
    const state = await fx.state("abort1");
    expect(state.done).toBe(false);
    expect(state.sent).toBeLessThan(20);
    expect(await eventually(async () => metricValue(await scrape(), "tokenplace_relay_proxy_active_streams") === 0)).toBe(true);
    expect(metricValue(await scrape(), "tokenplace_relay_upstream_errors_total", { kind: "client_abort" })).toBeGreaterThanOrEqual(1);
  });

  test("an upstream that breaks mid-stream ends the client's response (not a hang), counted as reset", async () => {
    const t0 = Date.now();
    const res = await fetch(`${relay.url}/api/crash?after=2`);
    expect(res.status).toBe(200);
    const { events, error } = await readEvents(res);
    expect(events.map((e) => e.i)).toEqual([0, 1]);
    // The relay drops the connection instead of sending a final chunk: the client sees the cut.
    expect(error).toBeDefined();
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(await eventually(async () => metricValue(await scrape(), "tokenplace_relay_upstream_errors_total", { kind: "reset" }) >= 1)).toBe(true);
    // And the relay keeps serving.
    expect((await fetch(`${relay.url}/api/sse?n=1&gap=0`)).status).toBe(200);
  });

  test("a silent stream is ended by the idle timeout and the upstream is released", async () => {
    const t0 = Date.now();
    const res = await fetch(`${relay.url}/api/stall?id=stall1`);
    const { events, error } = await readEvents(res);
    expect(events.length).toBe(1);
    expect(error).toBeDefined();
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(2_000);
    expect(took).toBeLessThan(10_000);
    expect(await eventually(async () => (await fx.state("stall1")).aborted)).toBe(true);
    expect(metricValue(await scrape(), "tokenplace_relay_upstream_errors_total", { kind: "idle" })).toBeGreaterThanOrEqual(1);
  });

  test("200 concurrent streams all complete, each in order", async () => {
    const one = async (k: number) => {
      const res = await fetch(`${relay.url}/api/sse?n=5&gap=50&id=c${k}`);
      if (res.status !== 200) return `status ${res.status}`;
      const { events, error } = await readEvents(res);
      return error ? `error ${String(error)}` : events.map((e) => e.i).join(",");
    };
    const results = await Promise.all(Array.from({ length: 200 }, (_, k) => one(k)));
    expect(results.filter((r) => r !== "0,1,2,3,4")).toEqual([]);
    expect(await eventually(async () => metricValue(await scrape(), "tokenplace_relay_proxy_active_streams") === 0)).toBe(true);
  }, 30_000);
});

describe("timeouts and bodies", () => {
  test("no response head within the first-byte timeout gives a JSON 504, and the upstream is released", async () => {
    const t0 = Date.now();
    const res = await fetch(`${relay.url}/api/slow?ms=8000&id=slow1`);
    expect(res.status).toBe(504);
    expect(await res.json()).toMatchObject({ error: { code: 504, type: "upstream_timeout" } });
    expect(res.headers.get("x-request-id")).toBeTruthy();
    expect(Date.now() - t0).toBeLessThan(6_000);
    expect(await eventually(async () => (await fx.state("slow1")).aborted)).toBe(true);
    expect(metricValue(await scrape(), "tokenplace_relay_upstream_errors_total", { kind: "timeout" })).toBeGreaterThanOrEqual(1);
  });

  test("a client that gives up while the upstream is still thinking aborts the upstream request too", async () => {
    const ac = new AbortController();
    const pending = fetch(`${relay.url}/api/slow?ms=8000&id=slow2`, { signal: ac.signal }).catch(() => "aborted");
    expect(await eventually(async () => (await fx.requests()).some((r) => r.includes("id=slow2")))).toBe(true);
    ac.abort();
    expect(await pending).toBe("aborted");
    expect(await eventually(async () => (await fx.state("slow2")).aborted)).toBe(true);
  });

  test("a large chunked request body streams to the upstream intact", async () => {
    const size = 3 * 1024 * 1024;
    const block = new Uint8Array(64 * 1024).map((_, i) => i % 251);
    const blocks = size / block.byteLength;
    let n = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        if (n++ < blocks) c.enqueue(block);
        else c.close();
      },
    });
    const hash = new Bun.CryptoHasher("sha256");
    for (let k = 0; k < blocks; k++) hash.update(block);
    const res = await fetch(`${relay.url}/api/echo`, { method: "POST", body, duplex: "half" } as RequestInit);
    expect(res.status).toBe(200);
    const echo = (await res.json()) as { bodyBytes: number; sha256: string; chunks: number };
    expect(echo.bodyBytes).toBe(size);
    expect(echo.sha256).toBe(hash.digest("hex"));
  });

  test("a body with a declared length over the limit is refused with a JSON 413 before reaching the upstream", async () => {
    const before = (await fx.requests()).length;
    const res = await fetch(`${relay.url}/api/echo?too=big`, { method: "POST", body: new Uint8Array(4 * 1024 * 1024 + 1) });
    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({ error: { code: 413, type: "body_too_large" } });
    expect((await fx.requests()).slice(before).some((r) => r.includes("too=big"))).toBe(false);
  });

  test("a chunked body that grows past the limit is cut", async () => {
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent > 6 * 1024 * 1024) return c.close();
        sent += 256 * 1024;
        c.enqueue(new Uint8Array(256 * 1024));
      },
    });
    const outcome = await fetch(`${relay.url}/api/echo`, { method: "POST", body, duplex: "half" } as RequestInit).then(
      async (r) => r.status,
      () => "connection closed",
    );
    // Either the relay's 413 arrives, or the connection closes while the client is still sending.
    expect([413, "connection closed"]).toContain(outcome);
  });

  test("gzip bodies pass through untouched with their Content-Encoding", async () => {
    const res = await fetch(`${relay.url}/api/gzip`, { decompress: false } as RequestInit);
    expect(res.headers.get("content-encoding")).toBe("gzip");
    const raw = new Uint8Array(await res.arrayBuffer());
    expect(new TextDecoder().decode(Bun.gunzipSync(raw))).toBe("compressed hello ".repeat(200));
  });
});

describe("metrics", () => {
  test("upstream requests by class, TTFB, bytes both ways", async () => {
    const text = await scrape();
    expect(metricValue(text, "tokenplace_relay_upstream_requests_total", { class: "2xx" })).toBeGreaterThan(200);
    expect(metricValue(text, "tokenplace_relay_upstream_requests_total", { class: "error" })).toBeGreaterThanOrEqual(1);
    expect(metricValue(text, "tokenplace_relay_upstream_ttfb_seconds_count")).toBeGreaterThan(200);
    expect(metricValue(text, "tokenplace_relay_proxy_bytes_total", { direction: "request" })).toBeGreaterThanOrEqual(3 * 1024 * 1024);
    expect(metricValue(text, "tokenplace_relay_proxy_bytes_total", { direction: "response" })).toBeGreaterThan(0);
    expect(text).toContain('tokenplace_relay_http_requests_total{method="GET",route="/api/*",status="200"}');
  });
});
