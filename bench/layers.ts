/**
 * `npm run bench:layers` (`bun run bench/layers.ts [--pairs=16] [--rounds=2] [--duration-ms=3000] [--quick]`):
 * what the layers every request of a production relay pays cost the ceiling itself, beside the
 * relay, in one run on this machine.
 *
 * The cycles section (bench/cycles.ts) compares the relay with the ceiling, a bare `Bun.serve`
 * that does the API v1 steps with plain Maps and nothing else. This prices the gap: the same
 * ceiling (bench/ceiling-server.ts) with `CEILING_LAYERS` adding one layer at a time, done with the
 * relay's own modules (the request id, the client's address, the body read under a deadline, the
 * X-Request-Id and CORS headers, the request metrics, the request log line: see that file), then
 * all of them, then the compiled relay on the memory store with the cycles section's settings.
 * Every server runs `--rounds` runs of `wrk` (bench/wrk/cycle.lua, API v1, `--pairs` connections),
 * interleaved, each after a one-second warm-up. Reported per server: cycles/s, its CPU time per
 * cycle (/proc: steadier than cycles/s on a shared machine), and both against the bare ceiling.
 *
 * `--quick` (the smoke test's): bare, all six and the relay only, one round of one second.
 *
 * What it shows: the share of the ceiling a relay can reach at most while it still identifies,
 * times, counts and logs each request, before any protocol check; the rest of the gap is the
 * relay's own logic (validation, the store, holds, limits).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startOnPort, type Server } from "./child.ts";
import { CEILING_LAYERS } from "./ceiling-layers.ts";
import { mergeRuns, wrkCycles, type CycleRun } from "./cycles.ts";
import { freePort, RELAY_BIN } from "./peers.ts";
import { machineFacts, markdown } from "./report.ts";
import { benchArgs } from "./args.ts";

const ARGS = benchArgs("bench/layers.ts", { quick: "flag", pairs: "count", rounds: "count", "duration-ms": "count" });
const QUICK = ARGS.quick;
const PAIRS = ARGS.pairs ?? 16;
const ROUNDS = QUICK ? 1 : (ARGS.rounds ?? 2);
const SECONDS = QUICK ? 1 : Math.max(1, Math.round((ARGS["duration-ms"] ?? 3_000) / 1_000));
const TOKEN = `bench-layers-${crypto.randomUUID()}`;

/** The cycles section's relay settings (bench/run.ts BROKER_ENV): quotas off, one loopback address sends all. */
const RELAY_ENV = {
  RELAY_HOST: "127.0.0.1",
  TOKENPLACE_RELAY_ONLY: "true",
  TOKEN_PLACE_RELAY_SERVER_TOKEN: TOKEN,
  RELAY_RATE_LIMITS: "off",
  RELAY_AUTH_FAILURE_LIMIT: "1000000/minute",
};

interface Variant {
  name: string;
  relay?: boolean;
  layers?: readonly string[];
}
const VARIANTS: Variant[] = [
  { name: "ceiling (bare)", layers: [] },
  ...(QUICK ? [] : CEILING_LAYERS.map((l) => ({ name: `ceiling + ${l}`, layers: [l] }))),
  { name: "ceiling + all six", layers: CEILING_LAYERS },
  { name: "relay, memory store", relay: true },
];

const logDir = mkdtempSync(join(tmpdir(), "tokenplace-bench-layers-"));
const running = new Set<Server>();
const stopAll = async () => {
  await Promise.all([...running].map((s) => s.stop()));
  running.clear();
};
for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => void stopAll().finally(() => process.exit(130)));

async function start(v: Variant): Promise<Server> {
  const port = await freePort();
  const s = v.relay
    ? await startOnPort({ name: "relay", cmd: [RELAY_BIN], env: { ...RELAY_ENV, RELAY_PORT: String(port) }, port, logDir })
    : await startOnPort({ name: v.name, cmd: [process.execPath, "run", "bench/ceiling-server.ts"], env: { CEILING_PORT: String(port), CEILING_LAYERS: v.layers!.join(",") }, port, logDir });
  running.add(s);
  return s;
}

const t0 = performance.now();
console.log(`tokenplace-relay bench:layers: API v1 cycles, ${PAIRS} pair(s), ${ROUNDS} round(s) of ${SECONDS} s per server`);
const runs = new Map<string, CycleRun[]>();
const workDir = join(logDir, "wrk");
rmSync(workDir, { recursive: true, force: true });
await Bun.$`mkdir -p ${workDir}`.quiet();
try {
  for (let round = 0; round < ROUNDS; round++) {
    // Rotating order: drift on a shared machine hits every variant alike.
    const order = VARIANTS.map((_, i) => VARIANTS[(i + round) % VARIANTS.length]!);
    for (const v of order) {
      const s = await start(v);
      try {
        const server = { role: v.relay ? ("memory" as const) : ("ceiling" as const), url: s.url, token: TOKEN, pid: s.pid };
        await wrkCycles("v1", server, PAIRS, 1, workDir);
        const r = await wrkCycles("v1", server, PAIRS, SECONDS, workDir);
        if (r.errors > 0 || r.socketErrors > 0) throw new Error(`${v.name}: ${r.errors} cycle errors, ${r.socketErrors} socket errors (${r.firstError})`);
        runs.set(v.name, [...(runs.get(v.name) ?? []), r]);
        console.log(`  round ${round + 1}: ${v.name}: ${Math.round(r.cyclesPerSecond)} cycles/s, ${r.cpuUs === undefined ? "?" : Math.round(r.cpuUs / r.cycles)} µs CPU per cycle`);
      } finally {
        await s.stop();
        running.delete(s);
      }
    }
  }
} finally {
  await stopAll();
}

const merged = new Map([...runs].map(([k, v]) => [k, mergeRuns(v)]));
const cpuPerCycle = (r: CycleRun) => (r.cpuUs === undefined ? NaN : r.cpuUs / r.cycles);
const bare = merged.get(VARIANTS[0]!.name)!;
const rows = VARIANTS.map((v) => {
  const r = merged.get(v.name)!;
  const cpu = cpuPerCycle(r);
  return [
    v.name,
    `${Math.round(r.cyclesPerSecond).toLocaleString("en-US")}`,
    `${Math.round((100 * r.cyclesPerSecond) / bare.cyclesPerSecond)} %`,
    `${Math.round(cpu)} µs`,
    v === VARIANTS[0] ? "" : `${cpu >= cpuPerCycle(bare) ? "+" : ""}${Math.round(cpu - cpuPerCycle(bare))} µs`,
    `${Math.round((100 * cpuPerCycle(bare)) / cpu)} %`,
  ];
});
const table = markdown(["server", "cycles/s", "of bare cycles/s", "CPU per cycle", "over bare", "bare CPU / this CPU"], rows);
const facts = machineFacts();
console.log(`\n${table}\n`);
console.log(`machine: ${Object.entries(facts).map(([k, v]) => `${k} ${v}`).join(", ")}; ${Math.round((performance.now() - t0) / 1000)} s`);
console.log(`BENCH_LAYERS_JSON ${JSON.stringify({ facts, pairs: PAIRS, rounds: ROUNDS, seconds: SECONDS, results: Object.fromEntries([...merged].map(([k, r]) => [k, { cyclesPerSecond: r.cyclesPerSecond, cpuUsPerCycle: cpuPerCycle(r) }])) })}`);
rmSync(logDir, { recursive: true, force: true });
