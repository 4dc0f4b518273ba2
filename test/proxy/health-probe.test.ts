import { describe, expect, test } from "bun:test";
import { ManualClock } from "../../src/clock.ts";
import { createMetrics } from "../../src/ops/metrics.ts";
import type { FetchFn } from "../../src/proxy/forward.ts";
import { createUpstreamProbe } from "../../src/proxy/health-probe.ts";
import { createUpstreamPool } from "../../src/proxy/upstreams.ts";
import { captureLogger } from "../helpers/relay.ts";

function setup(required: boolean, status: () => number) {
  const clock = new ManualClock();
  const calls: string[] = [];
  const fetch: FetchFn = async (input) => {
    calls.push(String(input));
    const s = status();
    if (s === 0) throw Object.assign(new TypeError("refused"), { code: "ECONNREFUSED" });
    return new Response("{}", { status: s });
  };
  const pool = createUpstreamPool([new URL("http://gpu:3000"), new URL("http://gpu2:3000/base/")], clock, 1_000);
  const metrics = createMetrics(undefined, { processMetrics: false });
  const probe = createUpstreamProbe({ upstreams: pool.all, healthPath: "/health", intervalMs: 1_000, required, fetch, clock, metrics, logger: captureLogger().logger });
  return { clock, calls, probe, metrics };
}

describe("upstream health probe", () => {
  test("probes each upstream's health path; readiness never probes once a result exists", async () => {
    const { calls, probe } = setup(true, () => 200);
    expect((await probe.readiness.check()).ok).toBe(true);
    expect(calls.sort()).toEqual(["http://gpu2:3000/base/health", "http://gpu:3000/health"]);
    for (let k = 0; k < 10; k++) await probe.readiness.check();
    expect(calls).toHaveLength(2);
  });

  test("required: a failed probe, or only stale successes, make readiness fail", async () => {
    let status = 200;
    const { clock, probe, metrics } = setup(true, () => status);
    await probe.probeNow();
    expect((await probe.readiness.check()).ok).toBe(true);
    clock.advance(3_001);
    expect((await probe.readiness.check()).ok).toBe(false);
    await probe.probeNow();
    expect((await probe.readiness.check()).ok).toBe(true);
    status = 0;
    await probe.probeNow();
    const r = await probe.readiness.check();
    expect(r).toMatchObject({ ok: false, detail: { upstreamHealthy: false } });
    expect(await metrics.registry.metrics()).toContain('tokenplace_relay_upstream_up{upstream="http://gpu:3000"} 0');
  });

  test("not required: reported, but readiness stays ok", async () => {
    const { probe } = setup(false, () => 503);
    expect(await probe.readiness.check()).toMatchObject({ ok: true, detail: { upstreamHealthy: false, upstreamHealthRequired: false } });
  });
});
