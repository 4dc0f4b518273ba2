// API v1 settings: upstream relay.py's names and defaults, but every bad value is a problem at
// start (upstream silently falls back), and secrets never show in --check-config.
import { describe, expect, test } from "bun:test";
import { EnvReader, describeConfig, loadConfig } from "../../src/config/index.ts";
import { loadMemoryBudget } from "../../src/config/memory.ts";

describe("API v1 settings", () => {
  test("defaults match upstream relay.py (spec §4) and the legacy protocol is off", () => {
    const { config, problems } = loadConfig({});
    expect(problems).toEqual([]);
    expect(config.v1).toEqual({
      leaseSeconds: 30,
      pollWaitSeconds: 10,
      inFlightTtlSeconds: 30,
      requestDeadlineSeconds: 480,
      tombstoneTtlSeconds: 60,
      terminalTtlSeconds: 300,
      pendingTtlSeconds: 300,
      maxQueueDepthPerNode: 1024,
      retrieveHoldMs: 8000,
      maxRequests: 10000,
      // All of the memory budget's stored-payload share while the legacy protocol is off.
      maxStoredBytes: config.memory.shares.storedBytes,
      // One client address: a quarter of it, the legacy protocol's per-node share.
      maxStoredBytesPerClient: Math.floor(config.v1.maxStoredBytes / 4),
      operatorTokens: [],
      legacyRoutes: false,
    });
  });

  test("an env file from relay.py carries over: fractional seconds, the in-flight TTL following the lease", () => {
    const { config, problems, unknown } = loadConfig({
      TOKEN_PLACE_API_V1_RELAY_SERVER_LEASE_SECONDS: "12",
      TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS: "2.5",
      TOKEN_PLACE_API_V1_REQUEST_DEADLINE_SECONDS: "90.5",
      TOKEN_PLACE_API_V1_CONTROL_TOMBSTONE_TTL_SECONDS: "30",
      TOKENPLACE_TERMINAL_REQUEST_TTL_SECONDS: "120",
      TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES: "yes",
      TOKEN_PLACE_OPERATOR_TOKEN: "operator-token-0123456789",
    });
    expect(problems).toEqual([]);
    expect(unknown).toEqual([]);
    expect(config.v1).toMatchObject({ leaseSeconds: 12, inFlightTtlSeconds: 12, pollWaitSeconds: 2.5, requestDeadlineSeconds: 90.5, legacyRoutes: true });
  });

  test("every bad value is listed at once, none is clamped or ignored", () => {
    const { problems } = loadConfig({
      TOKEN_PLACE_API_V1_RELAY_SERVER_LEASE_SECONDS: "0",
      TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS: "-1",
      TOKEN_PLACE_API_V1_IN_FLIGHT_TTL_SECONDS: "soon",
      TOKEN_PLACE_API_V1_REQUEST_DEADLINE_MIN_SECONDS: "600",
      TOKEN_PLACE_API_V1_REQUEST_DEADLINE_MAX_SECONDS: "300",
      TOKEN_PLACE_API_V1_CONTROL_TOMBSTONE_TTL_SECONDS: "301",
      TOKEN_PLACE_API_V1_MAX_QUEUE_DEPTH_PER_NODE: "1.5",
      RELAY_V1_RETRIEVE_HOLD_MS: "500",
      TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES: "maybe",
      TOKEN_PLACE_OPERATOR_TOKEN: "short",
      TOKEN_PLACE_KEY_ROTATION_TOKEN: " ",
    });
    const joined = problems.join("\n");
    for (const name of [
      "TOKEN_PLACE_API_V1_RELAY_SERVER_LEASE_SECONDS", "TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS", "TOKEN_PLACE_API_V1_IN_FLIGHT_TTL_SECONDS",
      "TOKEN_PLACE_API_V1_REQUEST_DEADLINE_MIN_SECONDS must not exceed", "TOKEN_PLACE_API_V1_CONTROL_TOMBSTONE_TTL_SECONDS",
      "TOKEN_PLACE_API_V1_MAX_QUEUE_DEPTH_PER_NODE", "RELAY_V1_RETRIEVE_HOLD_MS", "TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES",
      "TOKEN_PLACE_OPERATOR_TOKEN", "TOKEN_PLACE_KEY_ROTATION_TOKEN: set but empty",
    ]) expect(joined).toContain(name);
    expect(problems.length).toBeGreaterThanOrEqual(10);
  });

  test("the per-address byte share: a quarter by default, set by hand at least 64 KiB and at most the whole budget", () => {
    const MiB = 1024 * 1024;
    const set = (env: Record<string, string>) => loadConfig({ RELAY_V1_MAX_STORED_BYTES: String(8 * MiB), ...env });
    expect(set({}).config.v1.maxStoredBytesPerClient).toBe(2 * MiB);
    expect(set({ RELAY_V1_MAX_STORED_BYTES_PER_CLIENT: String(8 * MiB) })).toMatchObject({ problems: [], config: { v1: { maxStoredBytesPerClient: 8 * MiB } } });
    expect(set({ RELAY_V1_MAX_STORED_BYTES_PER_CLIENT: String(9 * MiB) }).problems.join()).toContain("RELAY_V1_MAX_STORED_BYTES_PER_CLIENT: 9437184 exceeds RELAY_V1_MAX_STORED_BYTES (8388608)");
    expect(set({ RELAY_V1_MAX_STORED_BYTES_PER_CLIENT: "1000" }).problems.join()).toContain("RELAY_V1_MAX_STORED_BYTES_PER_CLIENT");
    expect(set({ RELAY_V1_MAX_STORED_BYTES_PER_CLIENT: "a lot" }).problems.join()).toContain("RELAY_V1_MAX_STORED_BYTES_PER_CLIENT");
  });

  test("a deadline outside its clamps is a problem, not silently clamped", () => {
    const { problems } = loadConfig({ TOKEN_PLACE_API_V1_REQUEST_DEADLINE_SECONDS: "4000" });
    expect(problems.join()).toContain("TOKEN_PLACE_API_V1_REQUEST_DEADLINE_SECONDS: must be <= 3600");
  });

  test("registration tokens may be separated by newlines too (a mounted Secret file)", () => {
    const { config, problems } = loadConfig({ TOKEN_PLACE_RELAY_SERVER_TOKENS: "first-token-0123456789\nsecond-token-0123456789\n" });
    expect(problems).toEqual([]);
    expect(config.serverTokens).toEqual(["first-token-0123456789", "second-token-0123456789"]);
  });

  test("the default /api/ proxy prefix does not cover the relay's own API v1 routes; a prefix inside them is refused", () => {
    expect(loadConfig({}).problems).toEqual([]);
    const { problems } = loadConfig({ RELAY_PROXY_PREFIXES: "/api/v1/relay/servers/" });
    expect(problems.join()).toContain("lies inside the relay's own routes");
  });

  test("operator tokens are redacted in the printable config", () => {
    const { config } = loadConfig({ TOKEN_PLACE_OPERATOR_TOKEN: "operator-token-0123456789" });
    const text = JSON.stringify(describeConfig(config));
    expect(text).not.toContain("operator-token-0123456789");
    expect(text).toContain("1 configured (redacted)");
  });
});

describe("memory budget", () => {
  const budget = (env: Record<string, string>, files: Record<string, string>) => {
    const r = new EnvReader(env);
    return { budget: loadMemoryBudget(r, (path) => files[path]), problems: r.problems };
  };
  const MiB = 1024 * 1024;

  test("derived from the container's limit (3/4 of it): cgroup v2, else v1; 512 MiB without one", () => {
    const v2 = budget({}, { "/sys/fs/cgroup/memory.max": String(512 * MiB) });
    expect(v2.problems).toEqual([]);
    expect(v2.budget).toMatchObject({ bytes: 384 * MiB, source: "cgroup v2 memory.max", containerLimitBytes: 512 * MiB });
    expect(budget({}, { "/sys/fs/cgroup/memory.max": "max", "/sys/fs/cgroup/memory/memory.limit_in_bytes": String(1024 * MiB) }).budget.bytes).toBe(768 * MiB);
    const none = budget({}, { "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712" }).budget;
    expect(none).toMatchObject({ bytes: 512 * MiB, source: "default (no container limit)" });
    expect(none.containerLimitBytes).toBeUndefined();
  });

  test("the ceiling is split: runtime reserve, then stored 1/2, bodies 1/4, headroom 1/4; the guard acts inside the headroom", () => {
    const { budget: b } = budget({ RELAY_MEMORY_BUDGET_BYTES: String(512 * MiB) }, {});
    expect(b.shares).toEqual({ runtimeBytes: 64 * MiB, storedBytes: 224 * MiB, bodyBytes: 112 * MiB, headroomBytes: 112 * MiB });
    const { runtimeBytes, storedBytes, bodyBytes, headroomBytes } = b.shares;
    expect(runtimeBytes + storedBytes + bodyBytes + headroomBytes).toBe(b.bytes);
    expect(b.guard).toEqual({ enabled: true, collectBytes: 400 * MiB, shedClientsBytes: 456 * MiB, shedAllBytes: 484 * MiB });
    expect(budget({ RELAY_MEMORY_BUDGET_BYTES: String(512 * MiB), RELAY_MEMORY_GUARD: "false" }, {}).budget.guard.enabled).toBe(false);
  });

  test("a budget set by hand is checked against the container's limit and the runtime's reserve", () => {
    expect(budget({ RELAY_MEMORY_BUDGET_BYTES: String(400 * MiB) }, { "/sys/fs/cgroup/memory.max": String(512 * MiB) }).problems).toEqual([]);
    expect(budget({ RELAY_MEMORY_BUDGET_BYTES: String(470 * MiB) }, { "/sys/fs/cgroup/memory.max": String(512 * MiB) }).problems.join()).toContain("the kernel would kill the relay");
    expect(budget({ RELAY_MEMORY_BUDGET_BYTES: String(64 * MiB) }, {}).problems).toEqual(["RELAY_MEMORY_BUDGET_BYTES: must be >= 100663296, got 67108864"]);
    expect(budget({}, { "/sys/fs/cgroup/memory.max": String(100 * MiB) }).problems.join()).toContain("the container's memory limit (104857600, cgroup v2 memory.max) is too small");
  });

  test("stored payloads: API v1 gets the stored share, minus the legacy quarter when legacy routes are on; an override beyond the budget is refused", () => {
    const on = loadConfig({ RELAY_MEMORY_BUDGET_BYTES: String(200 * MiB), TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES: "true" });
    expect(on.problems).toEqual([]);
    expect(on.config.memory.shares.storedBytes).toBe(68 * MiB);
    expect(on.config.v1.maxStoredBytes).toBe(51 * MiB);
    expect(on.config.broker.maxStoredBytes).toBe(17 * MiB);
    const over = loadConfig({ RELAY_MEMORY_BUDGET_BYTES: String(128 * MiB), RELAY_V1_MAX_STORED_BYTES: String(200 * MiB) });
    expect(over.problems.join()).toContain("exceeds the memory budget");
  });

  test("bodies being read: RELAY_MAX_INFLIGHT_BODY_BYTES defaults to the body share at 4x; set by hand it must fit beside the stored share", () => {
    const derived = loadConfig({ RELAY_MEMORY_BUDGET_BYTES: String(512 * MiB) });
    expect(derived.problems).toEqual([]);
    expect(derived.config.bounds.maxInflightBodyBytes).toBe(28 * MiB);
    // Body share plus headroom: 224 MiB, 56 MiB at 4x.
    expect(loadConfig({ RELAY_MEMORY_BUDGET_BYTES: String(512 * MiB), RELAY_MAX_INFLIGHT_BODY_BYTES: String(56 * MiB) }).problems).toEqual([]);
    const tooMuch = loadConfig({ RELAY_MEMORY_BUDGET_BYTES: String(512 * MiB), RELAY_MAX_INFLIGHT_BODY_BYTES: String(57 * MiB) });
    expect(tooMuch.problems).toEqual([expect.stringContaining("RELAY_MAX_INFLIGHT_BODY_BYTES: 59768832 bytes being read cost ~239075328 at 4x")]);
    // The smallest budget reads 2 MiB at once: a 4 MiB body limit cannot fit, and says which knob to turn.
    const small = loadConfig({ RELAY_MEMORY_BUDGET_BYTES: String(96 * MiB) });
    expect(small.problems).toEqual([expect.stringContaining("less than one RELAY_MAX_BODY_BYTES (4194304); raise the budget or lower RELAY_MAX_BODY_BYTES")]);
    expect(loadConfig({ RELAY_MEMORY_BUDGET_BYTES: String(96 * MiB), RELAY_MAX_BODY_BYTES: String(2 * MiB) }).problems).toEqual([]);
    // Every problem at once, exit 2 lists them all.
    const both = loadConfig({ RELAY_MEMORY_BUDGET_BYTES: String(96 * MiB), RELAY_MAX_INFLIGHT_BODY_BYTES: String(64 * MiB), RELAY_V1_MAX_STORED_BYTES: String(97 * MiB) });
    expect(both.problems.length).toBe(2);
  });
});
