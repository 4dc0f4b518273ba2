/**
 * `npm run bench` (`bun run bench/run.ts [--quick] [--duration-ms=N] [--rounds=N]
 * [--concurrency=N] [--samples=N]`; env BENCH_DURATION_MS, BENCH_ROUNDS, BENCH_CONCURRENCY,
 * BENCH_SAMPLES). Starts the relay and a minimal Bun.serve baseline as child processes on
 * loopback and reports the relay's figures as ratios against the baseline measured in the same
 * run: machines are shared and noisy, ratios travel better than absolute numbers. Throughput
 * rounds alternate relay and baseline so drift hits both. Exit 1 if any request failed.
 */
import { startRelay, spawnServer, type ChildServer } from "../src/demo/relay-process.ts";
import { mergeLoad, type LoadResult } from "./load.ts";
import { latencyRows, machineFacts, msText, rate, table, type Row } from "./report.ts";
import {
  baselinePosts,
  dispatchLatency,
  faucetSinkPairs,
  fakeKey,
  gets,
  registerNode,
  type BenchParams,
} from "./scenarios.ts";

const DISPATCH_TARGET_MS = 50;

function option(name: string, env: string, fallback: number): number {
  const arg = process.argv.find((a) => a.startsWith(`--${name}=`));
  const raw = arg ? arg.slice(name.length + 3) : process.env[env];
  const n = raw === undefined ? fallback : Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} / ${env} must be a positive number, got ${raw}`);
  return Math.floor(n);
}

const quick = process.argv.includes("--quick");
const durationMs = option("duration-ms", "BENCH_DURATION_MS", quick ? 500 : 3_000);
const rounds = option("rounds", "BENCH_ROUNDS", quick ? 1 : 2);
const params: BenchParams = {
  concurrency: option("concurrency", "BENCH_CONCURRENCY", 32),
  roundMs: Math.max(100, Math.floor(durationMs / rounds)),
  warmupMs: quick ? 100 : 300,
  maxIterations: 1_000_000,
  samples: option("samples", "BENCH_SAMPLES", quick ? 20 : 200),
  settleMs: 5,
};

async function main(): Promise<number> {
  const facts = machineFacts();
  console.log(`tokenplace-relay benchmark${quick ? " (quick)" : ""}`);
  console.log(Object.entries(facts).map(([k, v]) => `${k}: ${v}`).join(" | "));
  console.log(`concurrency ${params.concurrency}, ${rounds} round(s) x ${params.roundMs} ms per scenario, ${params.samples} latency samples, loopback only\n`);

  let relay: ChildServer | undefined;
  let baseline: ChildServer | undefined;
  try {
    // Quotas off: one loopback address sends thousands of requests (unknown to an older relay: ignored).
    [relay, baseline] = await Promise.all([startRelay({ TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES: "true", RELAY_RATE_LIMITS: "off" }), spawnServer({ script: "bench/baseline-server.ts" })]);
    const nodeKeys = Array.from({ length: params.concurrency }, fakeKey);
    await Promise.all(nodeKeys.map((k) => registerNode(relay!.url, k)));

    const scenarios: Record<string, (ms: number) => Promise<LoadResult>> = {
      basePost: (ms) => baselinePosts(baseline!.url, params, ms),
      pairs: (ms) => faucetSinkPairs(relay!.url, nodeKeys, params, ms),
      baseGet: (ms) => gets(`${baseline!.url}/next_server`, params, ms, true),
      nextServer: (ms) => gets(`${relay!.url}/next_server`, params, ms, true),
    };
    for (const run of Object.values(scenarios)) await run(params.warmupMs); // JIT and connection pool warm-up
    const results: Record<string, LoadResult[]> = { basePost: [], pairs: [], baseGet: [], nextServer: [] };
    for (let r = 0; r < rounds; r++) {
      for (const [name, run] of Object.entries(scenarios)) results[name]!.push(await run(params.roundMs));
    }
    const m = Object.fromEntries(Object.entries(results).map(([k, v]) => [k, mergeLoad(v)]));
    const { basePost, pairs, baseGet, nextServer } = m as Record<string, ReturnType<typeof mergeLoad>>;

    const lat = await dispatchLatency(relay.url, baseline.url, params);
    const rtt = lat.baselineRtt;

    const rows: Row[] = [
      { name: "POST /faucet + POST /sink (pairs/s)", relay: rate(pairs!.perSecond, "pairs/s"), baseline: "", ratio: undefined },
      { name: "  as requests/s (2 per pair) vs plain POST", relay: rate(pairs!.perSecond * 2, "req/s"), baseline: rate(basePost!.perSecond, "req/s"), ratio: (pairs!.perSecond * 2) / basePost!.perSecond },
      { name: "GET /next_server vs plain GET", relay: rate(nextServer!.perSecond, "req/s"), baseline: rate(baseGet!.perSecond, "req/s"), ratio: nextServer!.perSecond / baseGet!.perSecond },
      ...latencyRows("long-poll dispatch vs plain POST RTT", lat.dispatch, rtt),
      { name: "/faucet ack p50 vs plain POST RTT p50", relay: msText(lat.faucetAck.p50), baseline: msText(rtt.p50), ratio: lat.faucetAck.p50 / rtt.p50 },
    ];
    console.log(table(rows));

    // Judged at p99: on a shared machine one descheduled sample can exceed any bound; report it.
    const met = lat.dispatch.p99 < DISPATCH_TARGET_MS;
    const over = lat.dispatchSamples.filter((v) => v >= DISPATCH_TARGET_MS).length;
    console.log(
      `\nlong-poll dispatch (job posted while the node holds /sink -> node has it): p50 ${msText(lat.dispatch.p50)}, p99 ${msText(lat.dispatch.p99)}, max ${msText(lat.dispatch.max)} over ${lat.dispatch.count} samples; ` +
        `target < ${DISPATCH_TARGET_MS} ms at p99: ${met ? "met" : "NOT met"}; ${over} sample(s) >= ${DISPATCH_TARGET_MS} ms${lat.misses ? `; ${lat.misses} missed` : ""}`,
    );
    const failures = Object.entries(m).filter(([, v]) => v.failed > 0);
    for (const [name, v] of failures) console.log(`errors in ${name}: ${v.failed} failed iterations, first: ${v.firstError}`);
    console.log(
      `BENCH_JSON ${JSON.stringify({
        facts,
        params: { ...params, rounds, quick },
        throughput: Object.fromEntries(Object.entries(m).map(([k, v]) => [k, { perSecond: Math.round(v.perSecond), completed: v.completed, failed: v.failed }])),
        ratios: Object.fromEntries(rows.filter((r) => r.ratio !== undefined).map((r) => [r.name.trim(), Math.round(r.ratio! * 1000) / 1000])),
        dispatchMs: lat.dispatch,
        baselineRttMs: rtt,
        dispatchTargetMet: met,
        dispatchSamplesOverTarget: over,
      })}`,
    );
    return failures.length > 0 || lat.misses > 0 ? 1 : 0;
  } catch (err) {
    console.error(`bench failed: ${err instanceof Error ? err.message : String(err)}`);
    if (relay) console.error(`relay output (last lines):\n${relay.output.slice(-10).join("\n")}`);
    return 1;
  } finally {
    await Promise.all([relay?.stop(), baseline?.stop()]);
  }
}

process.exitCode = await main();
