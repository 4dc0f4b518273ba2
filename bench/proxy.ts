/**
 * Proxy-mode benchmark: what the relay adds to time to first byte and to per-chunk latency,
 * measured in one run against the same upstream process, direct and through the relay,
 * interleaved so both see the same machine load. Loopback only, bounded (< 30 s).
 *
 *   bun run bench/proxy.ts [--quick]
 *
 * TTFB: fetch() to the first body byte of a one-event SSE answer.
 * Per-chunk latency: the upstream stamps each SSE event with its send time (same machine, same
 * clock); the client subtracts it from the arrival time. Event 0 travels with the response head
 * and is left out. Sequential streams (idle machine) and a batch of concurrent streams (load).
 */
import { startFixture, startProxyRelay, now, readEvents } from "../test/proxy/helpers.ts";

const quick = process.argv.includes("--quick");
const TTFB_SAMPLES = quick ? 40 : 300;
const STREAMS = quick ? 3 : 12;
const EVENTS = 40;
const GAP_MS = 10;
const CONCURRENT = quick ? 20 : 100;

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}

async function ttfb(base: string): Promise<number> {
  const t0 = now();
  const res = await fetch(`${base}/api/sse?n=1&gap=0`);
  const reader = res.body!.getReader();
  await reader.read();
  const t = now() - t0;
  await reader.cancel().catch(() => {});
  return t;
}

async function chunkLatencies(base: string, n = EVENTS): Promise<number[]> {
  const res = await fetch(`${base}/api/sse?n=${n}&gap=${GAP_MS}`);
  const { events, error } = await readEvents(res);
  if (error || events.length !== n) throw new Error(`stream broke: ${String(error)} after ${events.length}`);
  // Event 0 rides on the response head (that is TTFB's job); chunks after it are the stream proper.
  return events.slice(1).map((e) => e.arrivedAt - e.sentAt);
}

interface Row {
  name: string;
  direct: number[];
  relay: number[];
}

function report(rows: Row[]): void {
  const f = (x: number) => x.toFixed(3).padStart(8);
  console.log(`\nproxy bench (Bun ${Bun.version}, ${navigator.hardwareConcurrency} cores, loopback; ms)`);
  console.log("metric                         |  direct p50 |  relay p50 | added p50 | ratio p50 |  direct p95 |  relay p95 | added p95");
  const json: Record<string, unknown> = {};
  for (const r of rows) {
    const [d50, r50, d95, r95] = [pct(r.direct, 50), pct(r.relay, 50), pct(r.direct, 95), pct(r.relay, 95)];
    console.log(
      `${r.name.padEnd(30)} | ${f(d50)}    | ${f(r50)}   | ${f(r50 - d50)}  | ${(r50 / d50).toFixed(2).padStart(7)}x  | ${f(d95)}    | ${f(r95)}   | ${f(r95 - d95)}`,
    );
    json[r.name] = { samples: r.relay.length, directP50: d50, relayP50: r50, addedP50: r50 - d50, ratioP50: r50 / d50, directP95: d95, relayP95: r95, addedP95: r95 - d95 };
  }
  console.log(`PROXY_BENCH_JSON ${JSON.stringify(json)}`);
}

const fx = await startFixture();
const relay = await startProxyRelay(fx.url, { RELAY_UPSTREAM_HEALTH_INTERVAL_MS: "60000" });
const bases = { direct: fx.url, relay: relay.url };
const guard = setTimeout(() => {
  console.error("bench: over 60 s, giving up");
  relay.kill("SIGKILL");
  void fx.stop();
  process.exit(1);
}, 60_000);

try {
  // Warm up both paths (connection pools, JIT).
  for (let k = 0; k < 20; k++) {
    await ttfb(bases.direct);
    await ttfb(bases.relay);
  }
  await chunkLatencies(bases.direct, 5);
  await chunkLatencies(bases.relay, 5);

  const rows: Row[] = [
    { name: "time to first byte", direct: [], relay: [] },
    { name: "per-chunk latency (sequential)", direct: [], relay: [] },
    { name: `per-chunk latency (${CONCURRENT} streams)`, direct: [], relay: [] },
  ];
  // Interleaved, alternating which goes first, so drift in machine load hits both equally.
  for (let k = 0; k < TTFB_SAMPLES; k++) {
    const order = k % 2 === 0 ? (["direct", "relay"] as const) : (["relay", "direct"] as const);
    for (const which of order) rows[0]![which].push(await ttfb(bases[which]));
  }
  for (let k = 0; k < STREAMS; k++) {
    const order = k % 2 === 0 ? (["direct", "relay"] as const) : (["relay", "direct"] as const);
    for (const which of order) rows[1]![which].push(...(await chunkLatencies(bases[which])));
  }
  for (const which of ["direct", "relay"] as const) {
    const all = await Promise.all(Array.from({ length: CONCURRENT }, () => chunkLatencies(bases[which], 20)));
    rows[2]![which].push(...all.flat());
  }
  report(rows);
} finally {
  clearTimeout(guard);
  relay.kill("SIGKILL");
  await relay.proc.exited;
  await fx.stop();
}
