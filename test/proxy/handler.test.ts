/**
 * The proxy handler with an injected fetch: failure mapping, failover rules and fetch options,
 * without an upstream process.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { createProxyRoute } from "../../src/proxy/index.ts";
import type { FetchFn } from "../../src/proxy/forward.ts";
import { startTestRelay, type TestRelay } from "../helpers/relay.ts";
import { metricValue } from "./helpers.ts";

interface Call {
  url: string;
  init: BunFetchRequestInit;
}

const codeError = (code: string) => Object.assign(new TypeError(`${code}: simulated`), { code });

let relay: TestRelay | undefined;
afterEach(async () => {
  await relay?.shutdown();
  relay = undefined;
});

function start(env: Record<string, string>, respond: (url: URL, init: BunFetchRequestInit) => Promise<Response>): { relay: TestRelay; calls: Call[] } {
  const calls: Call[] = [];
  const fake: FetchFn = async (input, init = {}) => {
    const url = new URL(String(input));
    calls.push({ url: url.href, init });
    return respond(url, init);
  };
  relay = startTestRelay(
    // A list replaces the single URL (setting both with the URL left out is a config error).
    { TOKENPLACE_RELAY_ONLY: "false", ...(env.TOKEN_PLACE_RELAY_UPSTREAMS ? {} : { TOKENPLACE_RELAY_UPSTREAM_URL: "http://gpu-server:3000" }), ...env },
    { proxy: (d) => createProxyRoute({ ...d, fetch: fake, probe: false, env: {} }) },
  );
  return { relay, calls };
}

const metric = async (r: TestRelay, name: string, labels: Record<string, string> = {}) => metricValue(await r.metrics.registry.metrics(), name, labels);

describe("what is sent upstream", () => {
  test("the URL is the configured upstream plus path and query; Bun's proxy-hostile defaults are off", async () => {
    const { relay, calls } = start({}, async () => new Response("hi", { status: 201 }));
    const res = await fetch(`${relay.url}/api/v1/chat/completions?x=1`, { method: "POST", body: "{}", headers: { "X-Request-Id": "abc-123" } });
    expect(res.status).toBe(201);
    expect(await res.text()).toBe("hi");
    expect(calls).toHaveLength(1);
    const { url, init } = calls[0]!;
    expect(url).toBe("http://gpu-server:3000/api/v1/chat/completions?x=1");
    expect(init).toMatchObject({ method: "POST", redirect: "manual", decompress: false, timeout: false, proxy: false, duplex: "half" });
    expect(new Headers(init.headers).get("x-request-id")).toBe("abc-123");
    expect(init.signal).toBeInstanceOf(AbortSignal);
  });

  test("a redirect is the client's answer: passed through, not followed", async () => {
    const { relay, calls } = start({}, async () => new Response(null, { status: 302, headers: { Location: "/elsewhere" } }));
    const res = await fetch(`${relay.url}/v1/x`, { redirect: "manual" });
    expect(res.status).toBe(302);
    expect(res.headers.get("location")).toBe("/elsewhere");
    expect(calls).toHaveLength(1);
  });
});

describe("failures before the response head", () => {
  test("DNS failure: JSON 502 upstream_dns, counted as dns", async () => {
    const { relay } = start({}, async () => {
      throw codeError("ENOTFOUND");
    });
    const res = await fetch(`${relay.url}/api/x`);
    expect(res.status).toBe(502);
    expect(await res.json()).toMatchObject({ error: { type: "upstream_dns" } });
    expect(await metric(relay, "tokenplace_relay_upstream_errors_total", { kind: "dns" })).toBe(1);
    expect(await metric(relay, "tokenplace_relay_upstream_requests_total", { class: "error" })).toBe(1);
  });

  test("a declared body over the limit is refused before any fetch", async () => {
    const { relay, calls } = start({ RELAY_MAX_BODY_BYTES: "1024" }, async () => new Response("no"));
    const res = await fetch(`${relay.url}/api/x`, { method: "POST", body: "x".repeat(2000) });
    expect(res.status).toBe(413);
    expect(calls).toHaveLength(0);
  });

  test("TRACE and CONNECT-like methods get 405 with Allow", async () => {
    const { relay, calls } = start({}, async () => new Response("no"));
    const res = await fetch(`${relay.url}/api/x`, { method: "TRACE" });
    expect(res.status).toBe(405);
    expect(res.headers.get("allow")).toContain("POST");
    expect(calls).toHaveLength(0);
  });

  test("first-byte timeout: JSON 504 and the upstream fetch is aborted", async () => {
    let aborted = false;
    const { relay } = start({ RELAY_UPSTREAM_FIRST_BYTE_TIMEOUT_MS: "200" }, (_u, init) => {
      return new Promise((_resolve, reject) => {
        init.signal!.addEventListener("abort", () => {
          aborted = true;
          reject(init.signal!.reason);
        });
      });
    });
    const res = await fetch(`${relay.url}/api/x`);
    expect(res.status).toBe(504);
    expect(aborted).toBe(true);
  });

  test("a client whose upload stalls gets 408 (its own fault, not the upstream's), counted as client_idle", async () => {
    let received = 0;
    const { relay } = start({ RELAY_UPSTREAM_IDLE_TIMEOUT_MS: "1000" }, async (_u, init) => {
      // An upstream that reads the body as fast as it comes.
      const reader = (init.body as ReadableStream<Uint8Array>).getReader();
      const gone = new Promise<never>((_r, reject) => init.signal!.addEventListener("abort", () => reject(init.signal!.reason)));
      for (;;) {
        const { done, value } = await Promise.race([reader.read(), gone]);
        if (done) return new Response("ok");
        received += value.byteLength;
      }
    });
    const body = new ReadableStream<Uint8Array>({ start: (c) => c.enqueue(new TextEncoder().encode('{"partial":')) });
    const t0 = performance.now();
    const res = await fetch(`${relay.url}/api/x`, { method: "POST", body, duplex: "half" } as RequestInit);
    expect(res.status).toBe(408);
    expect(await res.json()).toMatchObject({ error: { code: 408, type: "client_body_timeout" } });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(900);
    expect(received).toBe(11);
    const text = await (await fetch(`${relay.url}/metrics`)).text();
    expect(metricValue(text, "tokenplace_relay_upstream_errors_total", { kind: "client_idle" })).toBe(1);
    expect(metricValue(text, "tokenplace_relay_upstream_errors_total", { kind: "idle" })).toBe(0);
  });
});

describe("failover between upstreams", () => {
  const two = { TOKEN_PLACE_RELAY_UPSTREAMS: "http://a:1,http://b:1" };
  const aFails = (code: string) => async (url: URL) => {
    if (url.hostname === "a") throw codeError(code);
    return new Response(`from ${url.hostname}`);
  };

  test("refused: a small POST fails over (it never reached the first upstream)", async () => {
    const { relay, calls } = start(two, aFails("ECONNREFUSED"));
    const res = await fetch(`${relay.url}/api/x`, { method: "POST", body: '{"stream":true}' });
    expect(await res.text()).toBe("from b");
    expect(calls.map((c) => new URL(c.url).hostname)).toEqual(["a", "b"]);
    // The buffered body was sent whole to b.
    expect(new TextDecoder().decode(calls[1]!.init.body as Uint8Array)).toBe('{"stream":true}');
  });

  test("reset before the head: a POST does not fail over (it may have been processed), a GET does", async () => {
    const { relay, calls } = start(two, aFails("ECONNRESET"));
    const post = await fetch(`${relay.url}/api/x`, { method: "POST", body: "{}" });
    expect(post.status).toBe(502);
    expect(await post.json()).toMatchObject({ error: { type: "upstream_reset" } });
    expect(calls).toHaveLength(1);
    // a is now ejected, so the GET goes to b (and would fail over to b anyway: GET is idempotent).
    const get = await fetch(`${relay.url}/api/x`);
    expect(await get.text()).toBe("from b");
  });

  test("a streamed body (no declared length) is sent once: no failover", async () => {
    const { relay, calls } = start(two, aFails("ECONNREFUSED"));
    const body = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode("{}"));
        c.close();
      },
    });
    const res = await fetch(`${relay.url}/api/x`, { method: "POST", body, duplex: "half" } as RequestInit);
    expect(res.status).toBe(502);
    expect(calls).toHaveLength(1);
  });
});

describe("after the head", () => {
  test("a client that stops reading is cut after the idle timeout, releasing the upstream", async () => {
    let aborted = false;
    let produced = 0;
    const { relay } = start({ RELAY_UPSTREAM_IDLE_TIMEOUT_MS: "1000" }, async (_u, init) => {
      init.signal!.addEventListener("abort", () => (aborted = true));
      const block = new Uint8Array(256 * 1024);
      return new Response(
        new ReadableStream({
          pull(c) {
            produced += block.byteLength;
            c.enqueue(block);
          },
        }),
      );
    });
    const res = await fetch(`${relay.url}/api/firehose`);
    expect(res.status).toBe(200);
    // Never read the body: socket buffers fill, the relay stops being asked for chunks.
    const cut = await (async () => {
      for (let k = 0; k < 100 && !aborted; k++) await Bun.sleep(100);
      return aborted;
    })();
    expect(cut).toBe(true);
    // Backpressure held: the upstream was not drained into relay memory.
    expect(produced).toBeLessThan(256 * 1024 * 1024);
    expect(await metric(relay, "tokenplace_relay_upstream_errors_total", { kind: "client_abort" })).toBe(1);
    await res.body?.cancel().catch(() => {});
  }, 15_000);

  test("a hard stop (drain grace over) cuts a running stream and frees it", async () => {
    const { relay } = start({}, async (_u, init) => {
      const enc = new TextEncoder();
      return new Response(
        new ReadableStream({
          start(c) {
            c.enqueue(enc.encode("data: 0\n\n"));
            init.signal!.addEventListener("abort", () => c.error(init.signal!.reason));
          },
        }),
        { headers: { "Content-Type": "text/event-stream" } },
      );
    });
    const res = await fetch(`${relay.url}/api/stream`);
    const reader = res.body!.getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toBe("data: 0\n\n");
    expect(await metric(relay, "tokenplace_relay_proxy_active_streams")).toBe(1);
    relay.lifecycle.hardStop();
    const end = await reader.read().then(
      (r) => (r.done ? "done" : "more"),
      () => "cut",
    );
    expect(end).toBe("cut");
    expect(await metric(relay, "tokenplace_relay_proxy_active_streams")).toBe(0);
  });
});
