/**
 * `tokenplace-relay healthcheck` is the image's HEALTHCHECK (distroless has no shell or curl) and
 * the chart's helm-test hook: exit 0 against a live relay, non-zero quickly against a dead port,
 * a server that never answers, or a non-2xx answer. "Quickly" is a bound, not a speed assertion:
 * Docker's HEALTHCHECK --timeout (5 s in the Dockerfile) must stay above the command's own 3 s.
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT, X64, binaryProblem, cleanupAfterAll, deadPort, gate, gatedTest, run, Spawned } from "./harness.ts";

const g = gate("healthcheck subcommand", [binaryProblem(X64)]);
cleanupAfterAll();

/** Generous upper bound for a failing check: the command's own timeout is 3 s. */
const FAIL_BOUND_MS = 10_000;

describe("healthcheck subcommand (x64 binary)", () => {
  let relay: Spawned | undefined;
  let port = 0;

  beforeAll(async () => {
    if (!g.ok) return;
    relay = new Spawned([X64], { env: { RELAY_PORT: "0", RELAY_HOST: "127.0.0.1", TOKENPLACE_RELAY_ONLY: "true" } });
    port = await relay.waitListening(20_000);
  });
  afterAll(() => relay?.stop());

  gatedTest(g, "exits 0 against a live relay on RELAY_PORT (empty environment otherwise)", async () => {
    const r = await run([X64, "healthcheck"], { env: { RELAY_PORT: String(port) }, timeoutMs: FAIL_BOUND_MS });
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: "" });
  });

  gatedTest(g, "exits 0 with --url pointing at /healthz of a ready relay", async () => {
    const r = await run([X64, "healthcheck", "--url", `http://127.0.0.1:${port}/healthz`], { timeoutMs: FAIL_BOUND_MS });
    expect(r.status).toBe(0);
  });

  gatedTest(g, "exits non-zero against a dead port, within the bound", async () => {
    const dead = await deadPort();
    const r = await run([X64, "healthcheck"], { env: { RELAY_PORT: String(dead) }, timeoutMs: FAIL_BOUND_MS });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`127.0.0.1:${dead}`);
  });

  gatedTest(g, "exits non-zero when the server accepts but never answers (its own timeout fires)", async () => {
    const sockets: Bun.Socket[] = [];
    const blackhole = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { open: (s) => void sockets.push(s), data() {} } });
    try {
      const r = await run([X64, "healthcheck", "--url", `http://127.0.0.1:${blackhole.port}/livez`], { timeoutMs: FAIL_BOUND_MS });
      expect(r.status).toBe(1);
      expect(sockets.length).toBeGreaterThan(0);
    } finally {
      blackhole.stop(true);
    }
  }, 20_000);

  gatedTest(g, "exits non-zero on a 503 (a degraded /healthz)", async () => {
    const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => Response.json({ status: "degraded" }, { status: 503 }) });
    try {
      const r = await run([X64, "healthcheck", "--url", `http://127.0.0.1:${server.port}/healthz`], { timeoutMs: FAIL_BOUND_MS });
      expect(r.status).toBe(1);
      expect(r.stderr).toContain("503");
    } finally {
      server.stop(true);
    }
  });

  gatedTest(g, "the Dockerfile's HEALTHCHECK --timeout leaves room for the command's own timeout", () => {
    const df = readFileSync(join(ROOT, "Dockerfile"), "utf8");
    const m = df.match(/^HEALTHCHECK\s+.*--timeout=(\d+)s/m);
    expect(m).not.toBeNull();
    const src = readFileSync(join(ROOT, "src/cli/healthcheck.ts"), "utf8");
    const own = Number(src.match(/HEALTHCHECK_TIMEOUT_MS\s*=\s*([\d_]+)/)?.[1]?.replace(/_/g, ""));
    expect(own).toBeGreaterThan(0);
    expect(Number(m![1]) * 1000).toBeGreaterThan(own);
  });
});
