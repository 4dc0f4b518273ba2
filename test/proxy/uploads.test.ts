/**
 * Proxied uploads against hostile clients: the body deadline (RELAY_BODY_TIMEOUT_MS) and the
 * per-address cap (RELAY_PROXY_MAX_UPLOADS_PER_IP), over raw sockets, with an injected upstream
 * fetch that records what reached it.
 */
import { afterEach, describe, expect, test } from "bun:test";
import type { FetchFn } from "../../src/proxy/forward.ts";
import { createProxyRoute } from "../../src/proxy/index.ts";
import { chunk, chunkedHead, openRaw, postHead, type RawConn } from "../helpers/raw-socket.ts";
import { startTestRelay, type TestRelay } from "../helpers/relay.ts";
import { metricValue } from "./helpers.ts";

let relay: TestRelay | undefined;
const conns: RawConn[] = [];
const timers: ReturnType<typeof setInterval>[] = [];
afterEach(async () => {
  for (const t of timers.splice(0)) clearInterval(t);
  for (const c of conns.splice(0)) c.destroy();
  await relay?.shutdown();
  relay = undefined;
});

interface Upstream {
  calls: { url: string; body: unknown }[];
  aborted: number;
}

/** An upstream that reads whatever body it gets as it comes, then answers 200. */
function start(env: Record<string, string>): { relay: TestRelay; up: Upstream } {
  const up: Upstream = { calls: [], aborted: 0 };
  const fake: FetchFn = async (input, init = {}) => {
    up.calls.push({ url: String(input), body: init.body });
    const gone = new Promise<never>((_r, reject) =>
      init.signal!.addEventListener("abort", () => {
        up.aborted++;
        reject(init.signal!.reason);
      }),
    );
    gone.catch(() => {});
    if (init.body instanceof ReadableStream) {
      const reader = (init.body as ReadableStream<Uint8Array>).getReader();
      for (;;) if ((await Promise.race([reader.read(), gone])).done) break;
    }
    return new Response("ok");
  };
  relay = startTestRelay(
    { TOKENPLACE_RELAY_ONLY: "false", TOKENPLACE_RELAY_UPSTREAM_URL: "http://gpu-server:3000", ...env },
    { proxy: (d) => createProxyRoute({ ...d, fetch: fake, probe: false, env: {} }) },
  );
  return { relay, up };
}

async function trickle(r: TestRelay, head: string, byte: string, everyMs = 50): Promise<RawConn> {
  const c = await openRaw(r.port);
  conns.push(c);
  c.send(head + byte);
  timers.push(setInterval(() => c.send(byte), everyMs));
  return c;
}

const json = (body: string) => JSON.parse(body) as { error: Record<string, unknown> };
const PATH = "/api/v1/chat/completions";

describe("upload deadline (RELAY_BODY_TIMEOUT_MS)", () => {
  test("a small declared body is read whole before the upstream is contacted: a trickler never reaches it and gets 408", async () => {
    const { relay, up } = start({ RELAY_BODY_TIMEOUT_MS: "400" });
    // A normal small POST arrives upstream as one buffered body.
    const ok = await fetch(relay.url + PATH, { method: "POST", body: '{"model":"m"}' });
    expect(ok.status).toBe(200);
    expect(up.calls).toHaveLength(1);
    expect(new TextDecoder().decode(up.calls[0]!.body as Uint8Array)).toBe('{"model":"m"}');

    const t0 = performance.now();
    const c = await trickle(relay, postHead(PATH, 1_000), " ");
    const res = await c.reply(5_000);
    expect(res.status).toBe(408);
    expect(json(res.body).error).toMatchObject({ code: 408, type: "body_timeout" });
    expect(performance.now() - t0).toBeLessThan(2_000);
    await c.closed;
    expect(up.calls).toHaveLength(1);
  });

  test("a chunked upload trickled byte by byte is cut at the deadline: 408, the upstream request aborted", async () => {
    // The idle timers (300 s) never fire for a byte every 50 ms; only the deadline does.
    const { relay, up } = start({ RELAY_BODY_TIMEOUT_MS: "500" });
    const c = await trickle(relay, chunkedHead(PATH), chunk(" "));
    const res = await c.reply(5_000);
    expect(res.status).toBe(408);
    expect(json(res.body).error).toMatchObject({ type: "body_timeout" });
    expect(up.calls).toHaveLength(1);
    expect(up.aborted).toBe(1);
    expect(metricValue(await relay.metrics.registry.metrics(), "tokenplace_relay_rejections_total", { reason: "body_timeout" })).toBe(1);
  });
});

describe("uploads per client address (RELAY_PROXY_MAX_UPLOADS_PER_IP)", () => {
  test("beyond the cap a new upload gets 429 too_many_uploads at once; requests without a body and later uploads pass", async () => {
    const { relay, up } = start({ RELAY_PROXY_MAX_UPLOADS_PER_IP: "2", RELAY_BODY_TIMEOUT_MS: "10000" });
    const a = await trickle(relay, chunkedHead(PATH), chunk(" "));
    await trickle(relay, chunkedHead(PATH), chunk(" "));
    const end = Date.now() + 2_000;
    while (up.calls.length < 2 && Date.now() < end) await Bun.sleep(5);

    const refused = await fetch(relay.url + PATH, { method: "POST", body: "{}" });
    expect(refused.status).toBe(429);
    expect(refused.headers.get("retry-after")).toBe("1");
    expect(((await refused.json()) as { error: Record<string, unknown> }).error).toMatchObject({ code: 429, type: "too_many_uploads", limit: 2 });
    // A GET carries no upload: not counted.
    expect((await fetch(relay.url + "/api/models")).status).toBe(200);

    // One upload finishes: its slot is free again.
    a.send("0\r\n\r\n");
    expect((await a.reply()).status).toBe(200);
    expect((await fetch(relay.url + PATH, { method: "POST", body: "{}" })).status).toBe(200);
    expect(metricValue(await relay.metrics.registry.metrics(), "tokenplace_relay_rejections_total", { reason: "too_many_uploads" })).toBe(1);
  });

  test("a crowd of tricklers (one byte each 100 ms): at most the cap reach the upstream, each for at most the deadline; others are served", async () => {
    const { relay, up } = start({ RELAY_PROXY_MAX_UPLOADS_PER_IP: "16", RELAY_BODY_TIMEOUT_MS: "600" });
    const crowd: RawConn[] = [];
    // Half declare small bodies (never reach the upstream), half stream chunked (hold a fetch).
    for (let i = 0; i < 100; i++) crowd.push(await trickle(relay, i % 2 ? postHead(PATH, 4_000) : chunkedHead(PATH), i % 2 ? " " : chunk(" "), 100));
    // Meanwhile a request without an upload is proxied as usual.
    expect((await fetch(relay.url + "/api/models")).status).toBe(200);
    const replies = await Promise.all(crowd.map((c) => c.reply(5_000)));
    const statuses = replies.map((r) => r.status);
    expect(statuses.filter((s) => s === 408)).toHaveLength(16);
    expect(statuses.filter((s) => s === 429)).toHaveLength(84);
    // Only chunked tricklers among the 16 admitted opened an upstream request, and each was aborted.
    const uploads = up.calls.filter((c) => c.url.endsWith(PATH));
    expect(uploads.length).toBeLessThanOrEqual(16);
    expect(up.aborted).toBe(uploads.length);
    // Once the deadline passed, slots are back: a real client is served.
    expect((await fetch(relay.url + PATH, { method: "POST", body: "{}" })).status).toBe(200);
  });
});
