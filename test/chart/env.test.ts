// The environment the chart's Deployment passes to the relay must use only names the relay reads
// (src/config/config.ts: loadConfig(env).known), and the relay must accept the rendered values.
import { describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { loadConfig } from "../../src/config/index.ts";
import { CHART, get, MINIMAL, render, renderOk, skipWithoutHelm, type K8sObject } from "./helm.ts";

const skip = skipWithoutHelm("test/chart/env.test.ts");

/** Read by Bun itself, not by the relay's config. */
const BUN_RUNTIME = new Set(["BUN_CONFIG_MAX_HTTP_REQUESTS"]);
/**
 * Stand-ins for values the chart takes from Secrets (a Redis URL must look like one; the metrics
 * token must differ from the server and operator tokens, which the relay checks).
 */
const SECRET_STANDINS: Record<string, string> = {
  TOKENPLACE_RELAY_REDIS_URL: "redis://:secret-from-kubernetes@tokenplace-relay-valkey.tokenplace.svc:6379/0",
  TOKENPLACE_METRICS_TOKEN: "metrics-token-from-kubernetes-0123456789",
};

const SCENARIOS = readdirSync(join(CHART, "ci")).filter((f) => f.endsWith("-values.yaml")).sort();

/** Env of the relay container: ConfigMap (envFrom) plus env; secret refs become a dummy token. */
function relayEnv(docs: K8sObject[]): Record<string, string> {
  const dep = get(docs, "Deployment");
  const c = dep.spec.template.spec.containers.find((x: { name: string }) => x.name === "relay");
  const env: Record<string, string> = {};
  for (const from of c.envFrom ?? []) {
    const cm = get(docs, "ConfigMap", from.configMapRef.name);
    Object.assign(env, cm.data);
  }
  for (const e of c.env ?? []) env[e.name] = e.value ?? (e.valueFrom?.secretKeyRef ? (SECRET_STANDINS[e.name] ?? "secret-from-kubernetes-0123456789") : "");
  return env;
}

describe.skipIf(skip)("Deployment env matches the relay's config names", () => {
  const { known } = loadConfig({});

  test("the relay's known set is what the chart expects (sanity)", () => {
    for (const name of ["RELAY_PORT", "TOKENPLACE_RELAY_UPSTREAM_URL", "TOKENPLACE_GPU_HOST", "TOKEN_PLACE_RELAY_SERVER_TOKEN", "RELAY_SHUTDOWN_DELAY_MS"]) {
      expect(known.has(name)).toBe(true);
    }
  });

  for (const scenario of SCENARIOS) {
    test(`${scenario}: every env name is read by the relay, and the relay accepts the values`, () => {
      const env = relayEnv(renderOk({ valuesFiles: [`ci/${scenario}`] }));
      const names = Object.keys(env);
      expect(names.length).toBeGreaterThan(5);
      const unknown = names.filter((n) => !known.has(n) && !BUN_RUNTIME.has(n));
      expect(unknown).toEqual([]);
      expect(env.BUN_CONFIG_MAX_HTTP_REQUESTS).toBe("1024");
      expect(env.RELAY_PORT).toBe("5010");

      // Every scenario, the shared-state ones included, loads with zero problems.
      const result = loadConfig(env);
      expect(result.problems).toEqual([]);
      expect(result.unknown).toEqual([]);
      expect(result.config.state.backend).toBe(env.TOKENPLACE_RELAY_STATE_BACKEND as "memory" | "redis");
      expect(result.config.port).toBe(5010);
      expect(result.config.shutdownDelayMs).toBeGreaterThanOrEqual(5000);
      if (!result.config.relayOnly) {
        expect(result.config.gpuHost).toBe("gpu-server");
        expect(result.config.gpuPort).toBe(3000);
        expect(result.config.upstreamUrl.href).toBe("http://gpu-server:3000/");
      }
    });
  }

  test("every tuning value reaches the relay under its own name (everything-enabled scenario)", () => {
    const env = relayEnv(renderOk({ valuesFiles: ["ci/full-values.yaml"] }));
    const { config } = loadConfig(env);
    expect(config.maxBodyBytes).toBe(8388608);
    expect(config.idleTimeoutSeconds).toBe(60);
    expect(config.dnsCacheMs).toBe(10000);
    expect(config.logLevel).toBe("debug");
    expect(config.broker).toMatchObject({ longPollMs: 8000, maxLongPolls: 2000, maxQueueDepth: 128, maxStreamSessions: 2000, maxStreamChunks: 8192 });
    expect(config.proxy).toMatchObject({ trustForwarded: true, requireUpstreamHealth: true, firstByteTimeoutMs: 120000, idleTimeoutMs: 600000, prefixes: ["/api/", "/v1/"] });
    expect(config.proxy.upstreams.map((u) => u.href)).toEqual(["http://gpu-server:3000/", "http://gpu-server-2:3000/"]);
    expect(config.serverTokens.length).toBe(1);
    expect(config.v1).toMatchObject({
      leaseSeconds: 45,
      pollWaitSeconds: 12.5,
      inFlightTtlSeconds: 60,
      requestDeadlineSeconds: 600,
      tombstoneTtlSeconds: 90,
      terminalTtlSeconds: 900,
      pendingTtlSeconds: 600,
      maxQueueDepthPerNode: 256,
      retrieveHoldMs: 7000,
      maxRequests: 1000000,
      maxStoredBytes: 268435456,
      legacyRoutes: false,
    });
    expect(config.v1.operatorTokens.length).toBe(1);
  });

  test("legacy routes and the operator token reach the relay (legacy scenario); defaults keep them off", () => {
    const legacy = loadConfig(relayEnv(renderOk({ valuesFiles: ["ci/legacy-values.yaml"] }))).config.v1;
    expect(legacy).toMatchObject({ legacyRoutes: true, retrieveHoldMs: 0, pollWaitSeconds: 0 });
    expect(legacy.operatorTokens.length).toBe(1);
    const defaults = loadConfig(relayEnv(renderOk({ valuesFiles: ["ci/default-values.yaml"] }))).config.v1;
    expect(defaults).toMatchObject({ legacyRoutes: false, operatorTokens: [] });
    expect(defaults).toEqual(loadConfig({}).config.v1);
  });

  test("shared state reaches the relay: backend, URL from a Secret, key prefix, command timeout (valkey scenario)", () => {
    const docs = renderOk({ valuesFiles: ["ci/valkey-values.yaml"] });
    const env = relayEnv(docs);
    const { config, problems } = loadConfig(env);
    expect(problems).toEqual([]);
    expect(config.state).toEqual({
      backend: "redis",
      redis: { url: SECRET_STANDINS.TOKENPLACE_RELAY_REDIS_URL!, keyPrefix: "tokenplace-relay:ci:", commandTimeoutMs: 1500 },
    });
    expect(config.v1.maxStoredBytes).toBe(67108864);
    // The URL the chart generates for the bundled Valkey is one the relay accepts as it stands.
    const secret = get(docs, "Secret", "tokenplace-relay-valkey");
    const url = Buffer.from(secret.data.url, "base64").toString();
    const real = loadConfig({ ...env, TOKENPLACE_RELAY_REDIS_URL: url });
    expect(real.problems).toEqual([]);
    expect(real.config.state.redis?.url).toBe(url);
  });

  test("memory state: the backend is explicit and no Redis setting reaches the relay (the relay would refuse a URL)", () => {
    const env = relayEnv(renderOk({ valuesFiles: ["ci/default-values.yaml"] }));
    expect(env.TOKENPLACE_RELAY_STATE_BACKEND).toBe("memory");
    expect(Object.keys(env).filter((n) => n.includes("REDIS"))).toEqual([]);
    const { config } = loadConfig(env);
    expect(config.state).toEqual({ backend: "memory" });
  });

  test("state.redis.keyPrefix and commandTimeoutMs: the relay's bounds are the chart's", () => {
    const base = { valuesFiles: ["ci/redis-external-values.yaml"] };
    for (const [prefix, ok] of [["a", true], ["x".repeat(64), true], ["tp.relay_1:env-2:", true], ["x".repeat(65), false], ["{hash}", false], ["with space", false]] as const) {
      const r = render({ ...base, set: { "state.redis.keyPrefix": prefix } });
      expect(r.ok).toBe(ok);
      if (!ok) expect(r.stderr).toContain("keyPrefix");
      const relay = loadConfig({ ...relayEnv(renderOk(base)), TOKENPLACE_RELAY_REDIS_KEY_PREFIX: prefix });
      expect(relay.problems.length === 0).toBe(ok);
    }
    for (const [ms, ok] of [[100, true], [30000, true], [99, false], [30001, false]] as const) {
      const r = render({ ...base, set: { "state.redis.commandTimeoutMs": ms } });
      expect(r.ok).toBe(ok);
      if (ok) expect(loadConfig(relayEnv(r.docs)).problems).toEqual([]);
      else expect(r.stderr).toContain("commandTimeoutMs");
    }
  });

  test("relayOnly renders a config the relay accepts", () => {
    const env = relayEnv(renderOk({ set: { "relay.relayOnly": true, "relay.serverToken.allowOpenRegistration": true } }));
    const result = loadConfig(env);
    expect(result.problems).toEqual([]);
    expect(result.config.relayOnly).toBe(true);
    expect(result.config.serverTokens).toEqual([]);
  });
});

/**
 * The chart's bounds for relay.apiV1.* are the relay's: each value's smallest and largest allowed
 * setting renders and the relay accepts it; one step outside, the chart refuses the render.
 */
describe.skipIf(skip)("relay.apiV1 bounds match the relay's", () => {
  const BOUNDS: [key: string, env: string, min: number, max: number, step: number][] = [
    ["leaseSeconds", "TOKEN_PLACE_API_V1_RELAY_SERVER_LEASE_SECONDS", 1, 3600, 1],
    ["pollWaitSeconds", "TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS", 0, 120, 0.5],
    ["inFlightTtlSeconds", "TOKEN_PLACE_API_V1_IN_FLIGHT_TTL_SECONDS", 1, 3600, 0.5],
    ["requestDeadlineSeconds", "TOKEN_PLACE_API_V1_REQUEST_DEADLINE_SECONDS", 1, 3600, 0.5],
    ["requestDeadlineMinSeconds", "TOKEN_PLACE_API_V1_REQUEST_DEADLINE_MIN_SECONDS", 1, 3600, 0.5],
    ["requestDeadlineMaxSeconds", "TOKEN_PLACE_API_V1_REQUEST_DEADLINE_MAX_SECONDS", 1, 3600, 0.5],
    ["tombstoneTtlSeconds", "TOKEN_PLACE_API_V1_CONTROL_TOMBSTONE_TTL_SECONDS", 1, 300, 0.5],
    ["terminalTtlSeconds", "TOKENPLACE_TERMINAL_REQUEST_TTL_SECONDS", 1, 86400, 0.5],
    ["pendingTtlSeconds", "TOKENPLACE_PENDING_REQUEST_TTL_SECONDS", 1, 86400, 0.5],
    ["maxQueueDepthPerNode", "TOKEN_PLACE_API_V1_MAX_QUEUE_DEPTH_PER_NODE", 1, 100000, 1],
    ["retrieveHoldMs", "RELAY_V1_RETRIEVE_HOLD_MS", 1000, 9000, 1],
    ["maxRequests", "RELAY_V1_MAX_REQUESTS", 1, 1000000, 1],
    ["maxStoredBytes", "RELAY_V1_MAX_STORED_BYTES", 1048576, 68719476736, 1],
  ];
  const values = (key: string, v: number) => ({ valuesFiles: ["ci/default-values.yaml"], setJson: { [`relay.apiV1.${key}`]: v } });

  for (const [key, env, min, max, step] of BOUNDS) {
    test(`${key} (${env}): ${min} and ${max} accepted by chart and relay, ${min - step} and ${max + step} refused`, () => {
      for (const v of [min, max]) {
        const rendered = relayEnv(renderOk(values(key, v)));
        expect(rendered[env]).toBe(String(v));
        // The stored-bytes cap must also fit the memory budget, which comes from the container's
        // limit at run time: give the relay a budget as large as the cap to test the bound itself.
        const budget = key === "maxStoredBytes" ? { RELAY_MEMORY_BUDGET_BYTES: String(Math.max(v, 128 * 1024 * 1024)) } : {};
        const problems = loadConfig({ ...rendered, ...budget }).problems.filter((p) => !p.includes("the kernel would kill the relay"));
        expect(problems).toEqual([]);
      }
      for (const v of [min - step, max + step]) {
        // retrieveHoldMs: 999 is inside 0..9000 but neither 0 (off) nor >= 1000.
        const r = render(values(key, v));
        expect(r.ok).toBe(false);
        expect(r.stderr).toContain(key);
        expect(loadConfig({ ...relayEnv(renderOk(MINIMAL)), [env]: String(v) }).problems.join("\n")).toContain(env);
      }
    });
  }
});

