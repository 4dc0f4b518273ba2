// Smoke test for `npm run bench`: quick mode completes, exits 0 and reports ratios against the
// same-run baseline. Deliberately no speed assertions: speed is measured by the bench, not tests.
import { expect, test } from "bun:test";
import { REPO_ROOT } from "../src/demo/relay-process.ts";

test("bench --quick completes and prints a ratio table", async () => {
  const proc = Bun.spawn([process.execPath, "run", "bench/run.ts", "--quick", "--duration-ms=300", "--samples=10"], {
    cwd: REPO_ROOT,
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, BENCH_CONCURRENCY: "8" },
  });
  const killer = setTimeout(() => proc.kill("SIGKILL"), 50_000);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(killer);
  if (code !== 0) console.error(stdout, stderr);
  expect(code).toBe(0);
  expect(stdout).toContain("ratio relay/baseline");
  expect(stdout).toMatch(/cores: \d+/);
  expect(stdout).toMatch(/\d+\.\d\dx/);

  const line = stdout.split("\n").find((l) => l.startsWith("BENCH_JSON "));
  expect(line).toBeDefined();
  const report = JSON.parse(line!.slice("BENCH_JSON ".length)) as {
    ratios: Record<string, number>;
    throughput: Record<string, { perSecond: number; failed: number }>;
    dispatchMs: { count: number };
  };
  expect(Object.keys(report.ratios).length).toBeGreaterThanOrEqual(4);
  for (const ratio of Object.values(report.ratios)) expect(ratio).toBeGreaterThan(0);
  for (const t of Object.values(report.throughput)) {
    expect(t.perSecond).toBeGreaterThan(0);
    expect(t.failed).toBe(0);
  }
  expect(report.dispatchMs.count).toBe(10);
}, 60_000);

// `npm run bench:v1 -- --quick`: only the wake-latency and request-cycle parts (the real peers are
// covered by test/v1/peers.test.ts). Again no speed assertions: every sample and cycle succeeded.
test("bench:v1 --quick measures held-poll wake latency and request cycles without a failure", async () => {
  const proc = Bun.spawn([process.execPath, "run", "bench/v1.ts", "--quick", "--samples=15", "--duration-ms=300", "--concurrency=4"], {
    cwd: REPO_ROOT,
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env },
  });
  const killer = setTimeout(() => proc.kill("SIGKILL"), 50_000);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(killer);
  if (code !== 0) console.error(stdout, stderr);
  expect(code).toBe(0);
  expect(stdout).toContain("| measure | tokenplace-relay |");
  expect(stdout).not.toContain("server.py + client.py");

  const line = stdout.split("\n").find((l) => l.startsWith("BENCH_V1_JSON "));
  expect(line).toBeDefined();
  const report = JSON.parse(line!.slice("BENCH_V1_JSON ".length)) as {
    peers?: unknown;
    failures: number;
    wakeMs: { poll: { count: number; p50: number }; retrieve: { count: number; p50: number }; misses: number };
    cycles: { perSecond: number; completed: number; failed: number };
  };
  expect(report.peers).toBeUndefined();
  expect(report.failures).toBe(0);
  expect(report.wakeMs.misses).toBe(0);
  expect(report.wakeMs.poll.count).toBe(15);
  expect(report.wakeMs.retrieve.count).toBe(15);
  // Woken, not timed out: a held poll that missed its wake-up would take its whole hold (seconds).
  expect(report.wakeMs.poll.p50).toBeLessThan(1_000);
  expect(report.wakeMs.retrieve.p50).toBeLessThan(1_000);
  expect(report.cycles.completed).toBeGreaterThan(0);
  expect(report.cycles.failed).toBe(0);
}, 60_000);
