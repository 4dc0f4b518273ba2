// Capacity refusals are logged once per code per interval with the count they stand for, so a
// flood of refused requests is not also a flood of synchronous log writes; every one is counted.
import { describe, expect, test } from "bun:test";
import { createLogSampler } from "../../src/http/log-sampler.ts";
import { captureLogger, fakeKey, startLegacyRelay } from "../helpers/relay.ts";

describe("refusal log sampler", () => {
  test("one line per code per interval, carrying how many it stood for; codes apart", () => {
    let t = 0;
    const s = createLogSampler(1_000, () => t);
    expect(s.take("busy_body_bytes")).toBe(0);
    for (let i = 0; i < 99; i++) expect(s.take("busy_body_bytes")).toBeUndefined();
    expect(s.take("storage_full")).toBe(0);
    t = 999;
    expect(s.take("busy_body_bytes")).toBeUndefined();
    t = 1_000;
    expect(s.take("busy_body_bytes")).toBe(100);
    expect(s.take("busy_body_bytes")).toBeUndefined();
    t = 5_000;
    expect(s.take("busy_body_bytes")).toBe(1);
    expect(s.take("storage_full")).toBe(0);
  });

  test("over HTTP: 60 refusals of one code give one warn line (or one a second), all 60 counted", async () => {
    const cap = captureLogger("warn");
    const relay = startLegacyRelay({ RELAY_LONG_POLL_MS: "0", RELAY_MAX_NODES: "1" }, { logger: cap.logger });
    try {
      expect((await relay.post("/sink", { server_public_key: fakeKey() })).status).toBe(200);
      const t0 = performance.now();
      for (let i = 0; i < 60; i++) expect((await relay.post("/sink", { server_public_key: fakeKey() })).status).toBe(503);
      const seconds = (performance.now() - t0) / 1000;
      const lines = cap.lines.filter((l) => l.msg === "request failed" && l.code === "nodes_full");
      expect(lines.length).toBeGreaterThanOrEqual(1);
      expect(lines.length).toBeLessThanOrEqual(Math.ceil(seconds) + 1);
      expect(lines[0]).toMatchObject({ level: "warn", status: 503, suppressed: 0 });
      const text = await (await relay.get("/metrics")).text();
      expect(text).toContain('tokenplace_relay_rejections_total{reason="nodes_full"} 60');
    } finally {
      await relay.shutdown();
    }
  });
});
