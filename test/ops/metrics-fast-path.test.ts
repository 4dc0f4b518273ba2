import { describe, expect, test } from "bun:test";
import { Registry } from "prom-client";
import { counterChild, counterChildren, createMetrics } from "../../src/ops/metrics.ts";

/**
 * observeRequest adds to prom-client's entries directly once a label set is known (src/ops/metrics.ts).
 * Fed the same requests, it must expose exactly what prom-client's own API exposes.
 */
describe("request metrics fast path", () => {
  const requests: Array<[string, string, number, number]> = [];
  const durations = [0, 0.0004, 0.001, 0.0011, 0.005, 0.02, 0.3, 0.99, 1, 4, 29.9, 30, 31, 120];
  for (let i = 0; i < 600; i++) {
    requests.push([["GET", "POST", "BREW", "HEAD"][i % 4]!, ["/livez", "/sink", "unmatched"][i % 3]!, [200, 404, 503][i % 5 === 0 ? 1 : i % 7 === 0 ? 2 : 0]!, durations[i % durations.length]!]);
  }

  const exposition = async (observe: (m: ReturnType<typeof createMetrics>, r: [string, string, number, number]) => void) => {
    const metrics = createMetrics(new Registry(), { processMetrics: false });
    for (const r of requests) observe(metrics, r);
    const text = await metrics.registry.metrics();
    return text.split("\n").filter((l) => l.startsWith("tokenplace_relay_http_request")).join("\n");
  };

  test("the same exposition as prom-client's API, counts and every bucket", async () => {
    const fast = await exposition((m, [method, route, status, s]) => m.observeRequest(method, route, status, s));
    const api = await exposition((m, [method, route, status, s]) => {
      const labels = { method: method === "BREW" ? "other" : method, route, status: String(status) };
      m.httpRequests.inc(labels);
      m.httpDuration.observe(labels, s);
    });
    expect(fast).toContain('tokenplace_relay_http_requests_total{method="other",route="/livez",status="200"}');
    expect(fast).toContain('le="+Inf"');
    expect(fast).toBe(api);
  });

  test("a reset registry starts over instead of counting into entries it no longer shows", async () => {
    const metrics = createMetrics(new Registry(), { processMetrics: false });
    metrics.observeRequest("GET", "/livez", 200, 0.002);
    metrics.observeRequest("GET", "/livez", 200, 0.002);
    metrics.registry.resetMetrics();
    metrics.observeRequest("GET", "/livez", 200, 0.002);
    const text = await metrics.registry.metrics();
    expect(text).toContain('tokenplace_relay_http_requests_total{method="GET",route="/livez",status="200"} 1');
    expect(text).toContain('tokenplace_relay_http_request_duration_seconds_count{method="GET",route="/livez",status="200"} 1');
  });
});

/** counterChild adds to a counter's entry directly once it exists (src/ops/metrics.ts). */
describe("counter children", () => {
  const outcomes = (text: string) => text.split("\n").filter((l) => l.startsWith("tokenplace_relay_long_poll_outcomes_total")).join("\n");

  test("the same exposition as labels().inc(), label sets apart", async () => {
    const fast = createMetrics(new Registry(), { processMetrics: false });
    const api = createMetrics(new Registry(), { processMetrics: false });
    const children = new Map<string, (n?: number) => void>();
    for (let i = 0; i < 300; i++) {
      const route = ["/sink", "/retrieve"][i % 2]!;
      const outcome = ["immediate", "woken", "timeout"][i % 3]!;
      const n = i % 5 === 0 ? 3 : 1;
      const key = `${route} ${outcome}`;
      let child = children.get(key);
      if (!child) children.set(key, (child = counterChild(fast.longPollOutcomes, { route, outcome })));
      child(n);
      api.longPollOutcomes.labels(route, outcome).inc(n);
    }
    const text = outcomes(await fast.registry.metrics());
    expect(text).toContain('tokenplace_relay_long_poll_outcomes_total{route="/sink",outcome="immediate"}');
    expect(text).toBe(outcomes(await api.registry.metrics()));
  });

  test("counterChildren: one child per label values, the same exposition as labels().inc()", async () => {
    const fast = createMetrics(new Registry(), { processMetrics: false });
    const api = createMetrics(new Registry(), { processMetrics: false });
    const count = counterChildren(fast.longPollOutcomes, ["route", "outcome"]);
    for (let i = 0; i < 300; i++) {
      const route = ["/sink", "/retrieve", "/api/v1/relay/servers/poll"][i % 3]!;
      const outcome = ["immediate", "woken", "timeout", "aborted"][i % 4]!;
      count(route, outcome);
      api.longPollOutcomes.labels(route, outcome).inc();
    }
    const text = outcomes(await fast.registry.metrics());
    expect(text).toContain('tokenplace_relay_long_poll_outcomes_total{route="/api/v1/relay/servers/poll",outcome="aborted"} 25');
    expect(text).toBe(outcomes(await api.registry.metrics()));
  });

  test("after a reset it counts into what the registry shows", async () => {
    const metrics = createMetrics(new Registry(), { processMetrics: false });
    const inc = counterChild(metrics.longPollOutcomes, { route: "/sink", outcome: "woken" });
    inc();
    inc();
    metrics.registry.resetMetrics();
    inc();
    inc();
    expect(await metrics.registry.metrics()).toContain('tokenplace_relay_long_poll_outcomes_total{route="/sink",outcome="woken"} 2');
  });
});
