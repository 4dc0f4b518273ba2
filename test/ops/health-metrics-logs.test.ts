import { describe, expect, test } from "bun:test";
import { connect } from "node:net";
import { Registry } from "prom-client";
import { ManualClock } from "../../src/clock.ts";
import { UNTRUE_UNDER_BUN } from "../../src/ops/metrics.ts";
import { captureLogger, fakeKey, job, startLegacyRelay } from "../helpers/relay.ts";

describe("/healthz readiness", () => {
  test("ok with the facts operators look at", async () => {
    const relay = startLegacyRelay({ TOKENPLACE_RELAY_ONLY: "false", TOKENPLACE_RELAY_UPSTREAM_URL: "http://gpu.lan:3000" });
    try {
      const res = await relay.get("/healthz");
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ status: "ok", upstream: "http://gpu.lan:3000/", gpuHost: "gpu.lan", knownServers: 0, gpuHostResolves: true });
    } finally {
      await relay.shutdown();
    }
  });

  test("degraded (503) while the GPU host does not resolve; cached between probes", async () => {
    let lookups = 0;
    let resolves = false;
    const clock = new ManualClock();
    const relay = startLegacyRelay(
      { TOKENPLACE_RELAY_ONLY: "false", RELAY_DNS_CACHE_MS: "5000" },
      { clock, resolveHost: async () => (lookups++, resolves) },
    );
    try {
      const res = await relay.get("/healthz");
      expect(res.status).toBe(503);
      expect(await res.json()).toMatchObject({ status: "degraded", gpuHost: "gpu-server", failing: ["gpuHost"] });
      resolves = true;
      expect((await relay.get("/healthz")).status).toBe(503); // still cached
      expect(lookups).toBe(1);
      clock.advance(5_000);
      expect((await relay.get("/healthz")).status).toBe(200);
      expect(lookups).toBe(2);
      // Liveness never depends on the upstream.
      expect((await relay.get("/livez")).status).toBe(200);
    } finally {
      await relay.shutdown();
    }
  });

  test("with an upstream list, readiness needs any one of its hosts to resolve", async () => {
    const asked: string[] = [];
    const relay = startLegacyRelay(
      { TOKENPLACE_RELAY_ONLY: "false", TOKEN_PLACE_RELAY_UPSTREAMS: "http://gpu-a:3000,http://gpu-b:3000" },
      { resolveHost: async (h) => (asked.push(h), h === "gpu-b") },
    );
    try {
      expect((await relay.get("/healthz")).status).toBe(200);
      expect(asked.sort()).toEqual(["gpu-a", "gpu-b"]);
    } finally {
      await relay.shutdown();
    }
  });

  test("relay-only mode does not look the GPU host up at all", async () => {
    let lookups = 0;
    const relay = startLegacyRelay({ TOKENPLACE_RELAY_ONLY: "true" }, { resolveHost: async () => (lookups++, false) });
    try {
      expect((await relay.get("/healthz")).status).toBe(200);
      expect(lookups).toBe(0);
    } finally {
      await relay.shutdown();
    }
  });

  test("draining: 503 with status draining as soon as shutdown begins", async () => {
    const relay = startLegacyRelay({ RELAY_SHUTDOWN_DELAY_MS: "300" });
    const stopping = relay.shutdown();
    const res = await relay.get("/healthz");
    expect(res.status).toBe(503);
    expect(((await res.json()) as { status: string }).status).toBe("draining");
    expect((await relay.get("/livez")).status).toBe(200);
    await stopping;
  });
});

describe("/metrics", () => {
  test("Prometheus text with the relay's series and only process metrics that are true under Bun", async () => {
    const relay = startLegacyRelay({ RELAY_LONG_POLL_MS: "0" }, { processMetrics: true, registry: new Registry() });
    try {
      const key = fakeKey();
      await relay.post("/sink", { server_public_key: key });
      await relay.post("/faucet", job(key));
      await relay.post("/faucet", "bad");
      const res = await relay.get("/metrics");
      expect(res.headers.get("content-type")).toContain("text/plain");
      const text = await res.text();
      for (const line of [
        'tokenplace_relay_http_requests_total{method="POST",route="/faucet",status="200"} 1',
        'tokenplace_relay_http_requests_total{method="POST",route="/faucet",status="400"} 1',
        'tokenplace_relay_rejections_total{reason="invalid_request"} 1',
        "tokenplace_relay_registered_nodes 1",
        "tokenplace_relay_queued_jobs 1",
        "tokenplace_relay_queue_depth_max 1",
        "tokenplace_relay_pending_answers 0",
        "tokenplace_relay_stream_sessions 0",
      ]) {
        expect(text).toContain(line);
      }
      expect(text).toMatch(/tokenplace_relay_http_request_duration_seconds_bucket\{le="0\.005",method="POST",route="\/faucet",status="200"\} \d/);
      expect(text).toMatch(/^tokenplace_relay_server_pending_requests \d+$/m);
      expect(text).toMatch(/^process_resident_memory_bytes \d+/m);
      expect(text).toMatch(/^process_cpu_seconds_total [\d.]+/m);
      for (const name of UNTRUE_UNDER_BUN) expect(text).not.toContain(`${name} `);
      // Keys never become label values.
      expect(text).not.toContain(key);
    } finally {
      await relay.shutdown();
    }
  });
});

describe("logs", () => {
  test("one JSON line per request with id, route, status and duration; probes at debug; no payload or token", async () => {
    const { logger, lines, raw } = captureLogger("info");
    const token = "secret-token-abcdefghijklmnop";
    const relay = startLegacyRelay({ RELAY_LONG_POLL_MS: "0", TOKEN_PLACE_RELAY_SERVER_TOKEN: token }, { logger });
    try {
      const key = fakeKey();
      await relay.post("/sink", { server_public_key: key }, { "X-Relay-Server-Token": token, "X-Request-Id": "req-42" });
      await relay.post("/faucet", job(key, { chat_history: "CIPHERTEXT-MARKER" }));
      await relay.get("/healthz");
      const requests = lines.filter((l) => l.msg === "request");
      expect(requests).toHaveLength(2);
      expect(requests[0]).toMatchObject({ reqId: "req-42", method: "POST", route: "/sink", status: 200, level: "info" });
      expect(typeof requests[0]!.durationMs).toBe("number");
      expect(requests[1]).toMatchObject({ route: "/faucet", status: 200 });
      const all = raw.join("\n");
      expect(all).not.toContain(token);
      expect(all).not.toContain("CIPHERTEXT-MARKER");
      expect(all).not.toContain(key);
    } finally {
      await relay.shutdown();
    }
  });

  test("redaction censors secret and payload fields even if code logs them by mistake", () => {
    const { logger, raw } = captureLogger("info");
    logger.info({ token: "t0k3n", headers: { "x-relay-server-token": "hdr-secret" }, body: { chat_history: "plain", iv: "iv1" } }, "oops");
    const line = raw.join("\n");
    for (const secret of ["t0k3n", "hdr-secret", "plain", "iv1"]) expect(line).not.toContain(secret);
    expect(line).toContain("[redacted]");
  });
});

describe("metric cardinality", () => {
  test("client-chosen methods and paths never become label values", async () => {
    const relay = startLegacyRelay();
    try {
      // fetch() would not send a made-up method: speak HTTP/1.1 over a raw socket.
      const raw = (head: string) =>
        new Promise<string>((resolve, reject) => {
          const sock = connect(relay.port, "127.0.0.1", () => sock.end(`${head}\r\nHost: x\r\nConnection: close\r\n\r\n`));
          let got = "";
          sock.on("data", (d) => (got += d));
          sock.on("end", () => resolve(got));
          sock.on("error", reject);
        });
      // Bun's parser refuses made-up methods itself (400); these WebDAV ones reach the app.
      const exotic = ["PROPFIND", "MKCOL", "PURGE", "LOCK", "SEARCH"];
      for (let i = 0; i < 5; i++) {
        expect(await raw(`${exotic[i]} /random-${i} HTTP/1.1`)).toStartWith("HTTP/1.1 404");
        await fetch(`${relay.url}/faucet/${crypto.randomUUID()}`);
      }
      const text = await (await relay.get("/metrics")).text();
      expect(text).toContain('tokenplace_relay_http_requests_total{method="other",route="unmatched",status="404"} 5');
      expect(text).toContain('tokenplace_relay_http_requests_total{method="GET",route="unmatched",status="404"} 5');
      for (const m of exotic) expect(text).not.toContain(m);
      expect(text).not.toContain("random-");
    } finally {
      await relay.shutdown();
    }
  });
});
