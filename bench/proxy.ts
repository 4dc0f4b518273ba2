/**
 * The streaming proxy beside nginx and beside the least a Bun proxy can do, in one run: where the
 * relay's time goes that is not Bun's. `npm run bench -- --only=proxy` reports relay vs nginx;
 * this adds the minimal Bun proxies (bench/baseline-server.ts: "pump" reads every chunk in
 * JavaScript like the relay, "native" hands fetch's body to the Response) and the CPU each proxy
 * process spent per event delivered, which is steadier than latency on a shared machine.
 *
 *   bun run bench/proxy.ts [--streams=100,1000] [--rounds=3] [--events=40] [--gap-ms=100]
 *                          [--paths=direct,nginx,relay,pump,native] [--compare=/path/to/other-relay-binary]
 *                          [--compare-env=NAME=value,...] [--warm-streams=10]
 *
 * Every path serves the same SSE upstream (bench/sse-upstream.ts) to the raw-socket client
 * (bench/sse-client.ts); all streams of a phase open at once; paths take turns, rotating, so load
 * drift hits all of them. `--compare` adds a second relay binary as path "compare" (for example
 * the build before a change); `--compare-env` adds environment for it alone (for example
 * `--compare=dist/tokenplace-relay-linux-x64 --compare-env=RELAY_MEMORY_GUARD=off`: the same build
 * with one setting changed). `--events=2 --gap-ms=1` makes per-request cost dominate; many
 * events with a short gap make per-chunk cost dominate. Loopback only; prints a table and a
 * `PROXY_BENCH_JSON` line.
 */
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { startOnPort, withFdLimit, type Server } from "./child.ts";
import { distribution } from "./load.ts";
import { freePort, RELAY_BIN } from "./peers.ts";
import { openSse } from "./sse-client.ts";
import { compileBare } from "./startup.ts";
import { NGINX_BIN, startNginx } from "./stream.ts";
import { benchArgs } from "./args.ts";

const ARGS = benchArgs("bench/proxy.ts", {
  streams: "list",
  rounds: "count",
  events: "count",
  "gap-ms": "count",
  "warm-streams": "count",
  compare: "text",
  "compare-env": "list",
  paths: "list",
});
const streamCounts = (ARGS.streams ?? ["100", "1000"]).map(Number);
if (streamCounts.some((n) => !Number.isSafeInteger(n) || n <= 0)) {
  console.error(`bench/proxy.ts: --streams wants positive whole numbers, e.g. --streams=100,1000 (got ${ARGS.streams!.join(",")})`);
  process.exit(2);
}
const rounds = ARGS.rounds ?? 3;
const events = ARGS.events ?? 40;
const gapMs = ARGS["gap-ms"] ?? 100;
/** Streams per path in the unmeasured warm-up; more of them let the JIT tier a relay's code up before the first phase. */
const warmStreams = ARGS["warm-streams"] ?? 10;
const compare = ARGS.compare ?? "";
const compareEnv = Object.fromEntries(
  (ARGS["compare-env"] ?? [])
    .filter((kv) => kv.includes("="))
    .map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]),
);
const paths = ARGS.paths ?? ["direct", "nginx", "relay", ...(compare ? ["compare"] : []), "pump", "native"];
if (paths.includes("nginx") && !NGINX_BIN) throw new Error("nginx is not installed (apt-get install nginx-light), or leave it out with --paths");

/** The limits a thousand streams need, as the bench's proxy section sets them. */
const RELAY_ENV = { RELAY_HOST: "127.0.0.1", BUN_CONFIG_MAX_HTTP_REQUESTS: "4096", RELAY_MAX_CONNECTIONS: "16384" };

/** User plus system CPU of a process (or, with a thread id, of one thread) so far, ms (Linux /proc; clock ticks of 10 ms). */
function cpuMs(pid: number, tid?: number): number {
  const fields = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/**
 * CPU so far by thread kind, ms: the JavaScript thread (the process's first thread), Bun's fetch
 * client thread, JavaScriptCore's compiler threads, and the rest (collector helpers, allocator,
 * workers). Where a proxy's CPU per request goes: a Bun proxy's JavaScript thread is the one
 * that serialises every new stream; the compiler's share is warm-up, and starts again whenever
 * compiled code was dropped (Bun.shrink).
 */
const THREAD_KINDS = ["js", "fetch", "jit", "other"] as const;
type ThreadKind = (typeof THREAD_KINDS)[number];
function cpuByThread(pid: number): Record<ThreadKind, number> {
  const out: Record<ThreadKind, number> = { js: 0, fetch: 0, jit: 0, other: 0 };
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const kind: ThreadKind = tid === String(pid) ? "js" : name === "HTTP Client" ? "fetch" : /JIT|JSCWarmUp/.test(name) ? "jit" : "other";
      out[kind] += cpuMs(pid, Number(tid));
    } catch {
      // the thread ended between listing and reading
    }
  }
  return out;
}

const logDir = mkdtempSync(join(tmpdir(), "tokenplace-bench-proxy-"));
const running: Server[] = [];
const ports: Record<string, number> = {};
const pids: Record<string, number> = {};
async function start(name: string, cmd: string[], env: Record<string, string>, portVar: string): Promise<Server> {
  const port = await freePort();
  const s = await startOnPort({ name, cmd, env: { ...env, [portVar]: String(port) }, port, logDir });
  running.push(s);
  ports[name] = s.port;
  pids[name] = s.pid;
  return s;
}

interface Acc {
  ok: number;
  events: number;
  seconds: number;
  cpuMs: number;
  threads: Record<ThreadKind, number>;
  ttfbs: number[];
  latencies: number[];
  error?: string;
}

async function phase(port: number, streams: number, n: number) {
  const t0 = performance.now();
  const open = Array.from({ length: streams }, () => openSse(port, `/api/sse?n=${n}&gap=${gapMs}`, n, n * gapMs + 30_000));
  const results = await Promise.all(open.map((s) => s.done));
  return { results, seconds: (performance.now() - t0) / 1_000 };
}

try {
  const up = await start("direct", withFdLimit([process.execPath, "run", "bench/sse-upstream.ts"]), {}, "SSE_PORT");
  if (paths.includes("nginx")) {
    const nginx = await startNginx(up.port, logDir);
    running.push(nginx);
    ports.nginx = nginx.port;
    // The worker does the proxying; the master only waits.
    const worker = Bun.spawnSync(["pgrep", "-P", String(nginx.pid)], { stdout: "pipe" }).stdout.toString().trim().split("\n")[0];
    pids.nginx = Number(worker);
  }
  if (paths.includes("relay")) await start("relay", withFdLimit([RELAY_BIN]), { ...RELAY_ENV, TOKENPLACE_RELAY_UPSTREAM_URL: up.url }, "RELAY_PORT");
  if (paths.includes("compare")) await start("compare", withFdLimit([compare]), { ...RELAY_ENV, ...compareEnv, TOKENPLACE_RELAY_UPSTREAM_URL: up.url }, "RELAY_PORT");
  const bare = paths.includes("pump") || paths.includes("native") ? compileBare(logDir) : "";
  for (const mode of ["pump", "native"] as const) {
    if (paths.includes(mode)) await start(mode, withFdLimit([bare]), { BASELINE_PROXY_UPSTREAM: up.url, BASELINE_PROXY_MODE: mode, BUN_CONFIG_MAX_HTTP_REQUESTS: "4096" }, "BASELINE_PORT");
  }

  // Warm-up: connection pools, JIT, nginx's upstream keep-alive.
  for (const p of paths) await phase(ports[p]!, warmStreams, 3);
  const acc = new Map<string, Acc>();
  const loadAtStart = loadavg();
  let turn = 0;
  for (let r = 0; r < rounds; r++) {
    for (const n of streamCounts) {
      for (let k = 0; k < paths.length; k++) {
        const p = paths[(k + turn) % paths.length]!;
        console.error(`[proxy bench] round ${r + 1}/${rounds}, ${n} streams, ${p}`);
        const c0 = cpuMs(pids[p]!);
        const t0 = cpuByThread(pids[p]!);
        const { results, seconds } = await phase(ports[p]!, n, events);
        const a = acc.get(`${n} ${p}`) ?? { ok: 0, events: 0, seconds: 0, cpuMs: 0, threads: { js: 0, fetch: 0, jit: 0, other: 0 }, ttfbs: [], latencies: [] };
        a.cpuMs += cpuMs(pids[p]!) - c0;
        const t1 = cpuByThread(pids[p]!);
        for (const k of THREAD_KINDS) a.threads[k] += t1[k] - t0[k];
        a.seconds += seconds;
        for (const res of results) {
          if (res.error === undefined) a.ok++;
          else a.error ??= res.error;
          a.events += res.events;
          if (Number.isFinite(res.ttfbMs)) a.ttfbs.push(res.ttfbMs);
          a.latencies.push(...res.latencies);
        }
        acc.set(`${n} ${p}`, a);
        await Bun.sleep(500); // let this phase's sockets close before the next opens its own
      }
      turn++;
    }
  }

  const f = (x: number) => x.toFixed(2).padStart(8);
  console.log(`\nproxy bench (Bun ${Bun.version}, ${navigator.hardwareConcurrency} cores, loopback; load average at start ${loadAtStart.map((x) => x.toFixed(2)).join(" ")}, at end ${loadavg().map((x) => x.toFixed(2)).join(" ")})`);
  console.log(`${events} events per stream, ${gapMs} ms apart; ${rounds} round(s) merged; ms unless said; CPU: the proxy process (direct: the upstream)`);
  console.log("streams | path    | ok     | events/s | TTFB p50 | TTFB p99 | event p50 | event p99 | CPU us/event | CPU us/stream: js fetch jit other");
  const json: Record<string, unknown> = {};
  for (const n of streamCounts) {
    for (const p of paths) {
      const a = acc.get(`${n} ${p}`)!;
      const t = distribution(a.ttfbs);
      const l = distribution(a.latencies);
      const cpu = (a.cpuMs * 1_000) / a.events;
      const perStream = Object.fromEntries(THREAD_KINDS.map((k) => [k, (a.threads[k] * 1_000) / (n * rounds)])) as Record<ThreadKind, number>;
      const threads = p === "nginx" ? "" : THREAD_KINDS.map((k) => perStream[k].toFixed(0).padStart(4)).join(" ");
      console.log(
        `${String(n).padStart(7)} | ${p.padEnd(7)} | ${String(a.ok).padStart(6)} | ${(a.events / a.seconds).toFixed(0).padStart(8)} | ${f(t.p50)} | ${f(t.p99)} | ${f(l.p50)}  | ${f(l.p99)}  | ${f(cpu)}     | ${threads}${a.error ? `  first error: ${a.error}` : ""}`,
      );
      json[`${n} ${p}`] = { streams: n * rounds, ok: a.ok, eventsPerSecond: a.events / a.seconds, ttfb: t, latency: l, cpuUsPerEvent: cpu, cpuUsPerStreamByThread: perStream };
    }
  }
  console.log(`PROXY_BENCH_JSON ${JSON.stringify({ events, gapMs, rounds, load: loadAtStart, paths: json })}`);
} finally {
  await Promise.all(running.map((s) => s.stop()));
}
