// API v1's held routes under RELAY_MAX_HOLDS_PER_IP: one address holds at most its share of each
// budget; beyond, servers/poll answers at once with the unheld pace (never a tight loop).
import { afterEach, describe, expect, test } from "bun:test";
import type { TestRelay } from "../helpers/relay.ts";
import { metricValue } from "../proxy/helpers.ts";
import { startV1Relay, v1Peers } from "./helpers.ts";

let relay: TestRelay | undefined;
afterEach(async () => {
  await relay?.shutdown();
  relay = undefined;
});

describe("held API v1 polls per client address", () => {
  test("beyond RELAY_MAX_HOLDS_PER_IP a node's poll answers at once with next_ping lease/2, counted", async () => {
    relay = startV1Relay({ TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS: "2", RELAY_MAX_HOLDS_PER_IP: "2" });
    const p = v1Peers(relay);
    const nodes = [await p.register(), await p.register(), await p.register()];
    const held = nodes.slice(0, 2).map((n) => p.poll(n.key));
    const end = Date.now() + 2_000;
    while (relay.app.holds.waiting < 2 && Date.now() < end) await Bun.sleep(5);
    expect(relay.app.holds.waiting).toBe(2);

    const t0 = performance.now();
    const third = await p.poll(nodes[2]!.key);
    expect(performance.now() - t0).toBeLessThan(1_000);
    expect(third.body).toEqual({ message: "No requests available", next_ping_in_x_seconds: 15, poll_wait_seconds: 2 });
    expect(metricValue(await relay.metrics.registry.metrics(), "tokenplace_relay_rejections_total", { reason: "long_poll_per_ip" })).toBe(1);
    for (const r of await Promise.all(held)) expect(r.body.next_ping_in_x_seconds).toBe(0);
  });
});
