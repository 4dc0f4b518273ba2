/**
 * `npm run bench`: the relay measured beside what a user would pick instead, in one run on this
 * machine, printed as Markdown and written to bench/results.md (docs/demo-and-bench.md explains
 * every figure). Machines like this one are shared and noisy: the ratios travel, the absolute
 * numbers do not.
 *
 *   npm run bench                                  # every section, about 5-6 minutes
 *   npm run bench -- --only=proxy                  # one section (or several: --only=cycles,wake)
 *   npm run bench -- --skip=peers                  # all but some
 *   npm run bench -- --quick                       # tiny durations (the smoke test), no results.md
 *
 * Sections: cycles (broker cycles vs the bare-Bun ceiling and upstream relay.py, memory and
 * Valkey), wake (held-poll wake latency, memory and Valkey across two replicas), peers (unmodified
 * server.py + client.py through the relay and through relay.py), proxy (SSE streams through the
 * relay, nginx and direct), memory (RSS of the compiled binary), startup (launch to /healthz).
 *
 * Options: --duration-ms=N (per wrk run, whole seconds, default 3000), --cycle-rounds=N (default 2),
 * --pairs=1,2,16,
 * --protocols=v1,legacy, --samples=N (wake, default 200), --rounds=N (peers, default 3),
 * --streams=100,1000 (proxy), --events=N and --gap-ms=N (proxy, default 40 events 100 ms apart),
 * --proxy-rounds=N (default 2),
 * --holds=N (memory, default 10000), --settle-ms=N (memory, default 15000), --startup-runs=N
 * (default 10), --state=memory,valkey, --no-upstream (leave relay.py out), --build (rebuild
 * dist/ first; by default only when missing), --out=FILE (default bench/results.md; --quick
 * writes nothing unless given), --note=TEXT (the load the machine was under, for the report). Exit 1 if any request, sample, stream or run failed.
 */
import { existsSync, mkdirSync, mkdtempSync, statSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { BENCH_FD_LIMIT, reachableFdLimit, revisionFromLog, startOnPort, withFdLimit, type Server } from "./child.ts";
import { cyclesSection, PAIRS, PROTOCOLS, type CycleServer, type Protocol } from "./cycles.ts";
import { distribution } from "./load.ts";
import { memoryRelayEnv, memorySection } from "./memory.ts";
import { freePort, peersProblems, PEERS_DIR, RELAY_BIN, REPO, runTokenplaceE2E, startUpstreamRelay, VENV, type E2EResult, type UpstreamRelay } from "./peers.ts";
import { markdown, metText, msText, ratioText, toolVersions, type SectionResult, type Target } from "./report.ts";
import { openRedisStore, type StateStore } from "./state.ts";
import { compileBare, startupSection } from "./startup.ts";
import { NGINX_BIN, startNginx, streamSection } from "./stream.ts";
import { wakeLatency, type Place } from "./v1-wake.ts";
import { redisServerPath } from "../test/helpers/redis.ts";
import { benchArgs } from "./args.ts";

// ------------------------------------------------------------------------------ options

const args = process.argv.slice(2);
const A = benchArgs("bench/run.ts", {
  quick: "flag",
  build: "flag",
  "no-upstream": "flag",
  only: "list",
  skip: "list",
  state: "list",
  pairs: "list",
  protocols: "list",
  streams: "list",
  "duration-ms": "count",
  "cycle-rounds": "count",
  samples: "count",
  rounds: "count",
  events: "count",
  "gap-ms": "count",
  "proxy-rounds": "count",
  holds: "count",
  "settle-ms": "count",
  "startup-runs": "count",
  out: "text",
  note: "text",
});
/** A list of positive whole numbers (--pairs, --streams), or exit 2 naming the option. */
function counts(name: "pairs" | "streams", fallback: number[]): number[] {
  const raw = A[name];
  if (raw === undefined) return fallback;
  const n = raw.map(Number);
  if (n.length === 0 || n.some((x) => !Number.isSafeInteger(x) || x <= 0)) {
    console.error(`bench/run.ts: --${name} wants positive whole numbers separated by commas (got ${JSON.stringify(raw.join(","))})`);
    process.exit(2);
  }
  return n;
}

export const SECTIONS = ["cycles", "wake", "peers", "proxy", "memory", "startup"] as const;
type SectionId = (typeof SECTIONS)[number];
const TITLES: Record<SectionId, string> = {
  cycles: "1. Broker cycles",
  wake: "2. Held-poll wake latency",
  peers: "3. Unmodified peers",
  proxy: "4. Streaming proxy",
  memory: "5. Memory",
  startup: "6. Start-up",
};

const quick = A.quick;
const only = A.only ?? [...SECTIONS];
const skip = A.skip ?? [];
const states = (A.state ?? ["memory", "valkey"]).map((s) => (s === "redis" ? "valkey" : s));
const protocols = A.protocols ?? PROTOCOLS;
{
  const problems = [
    ...[...only, ...skip].filter((x) => !SECTIONS.includes(x as SectionId)).map((x) => `unknown section ${JSON.stringify(x)} (${SECTIONS.join(", ")})`),
    ...states.filter((x) => x !== "memory" && x !== "valkey").map((x) => `--state: unknown backend ${JSON.stringify(x)} (memory, valkey)`),
    ...protocols.filter((x) => !PROTOCOLS.includes(x as Protocol)).map((x) => `--protocols: unknown protocol ${JSON.stringify(x)} (${PROTOCOLS.join(", ")})`),
  ];
  for (const p of problems) console.error(`bench/run.ts: ${p}`);
  if (problems.length > 0) process.exit(2);
}
const sections = SECTIONS.filter((s) => only.includes(s) && !skip.includes(s));
const opts = {
  seconds: Math.max(1, Math.round((A["duration-ms"] ?? (quick ? 1_000 : 3_000)) / 1_000)),
  cycleRounds: A["cycle-rounds"] ?? (quick ? 1 : 2),
  pairs: counts("pairs", quick ? [1, 2] : [...PAIRS]),
  protocols: protocols as Protocol[],
  samples: A.samples ?? (quick ? 15 : 200),
  rounds: A.rounds ?? 3,
  streams: counts("streams", quick ? [10, 20] : [100, 1000]),
  events: A.events ?? (quick ? 5 : 40),
  gapMs: A["gap-ms"] ?? 100,
  proxyRounds: A["proxy-rounds"] ?? (quick ? 1 : 2),
  holds: A.holds ?? (quick ? 200 : 10_000),
  settleMs: A["settle-ms"] ?? (quick ? 500 : 15_000),
  startupRuns: A["startup-runs"] ?? (quick ? 2 : 10),
  upstream: !A["no-upstream"],
  valkey: states.includes("valkey"),
  build: A.build,
  out: A.out ?? (quick ? undefined : join(REPO, "bench/results.md")),
  /** Free text for the report: what else the machine was doing. */
  note: A.note,
};

const TOKEN = `bench-${crypto.randomUUID()}`;
/** Descriptors the relay keeps for everything but the measured sockets (listeners, logs, the bench's own). */
const FD_HEADROOM = 1_000;
const log = (m: string) => console.error(`[bench] ${m}`);

// ------------------------------------------------------------------------------ servers

/** The relay as the bench runs it for cycles, wake and peers: defaults (request logging included), plus these. */
const BROKER_ENV = {
  RELAY_HOST: "127.0.0.1",
  TOKENPLACE_RELAY_ONLY: "true",
  TOKEN_PLACE_RELAY_SERVER_TOKEN: TOKEN,
  TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES: "true",
  // One loopback address sends everything: the per-address quotas would refuse it (upstream's
  // relay.py runs with its limits raised for the same reason, by start-upstream-relay.sh).
  RELAY_RATE_LIMITS: "off",
  RELAY_AUTH_FAILURE_LIMIT: "1000000/minute",
};

const logDir = mkdtempSync(join(tmpdir(), "tokenplace-bench-"));
const running: Server[] = [];
let store: StateStore | undefined;
let upstream: UpstreamRelay | undefined;
const stopAll = async () => {
  await Promise.all([...running.splice(0).map((s) => s.stop()), upstream?.stop()]);
  await store?.stop();
};
/** The servers only cycles and wake use, stopped once neither is left to run: later sections measure on a quieter machine. */
const BROKER_SERVERS = ["relay-memory", "relay-valkey-a", "relay-valkey-b", "ceiling", "baseline"];
async function stopBrokers(): Promise<void> {
  const done = running.filter((s) => BROKER_SERVERS.includes(s.name));
  for (const s of done) running.splice(running.indexOf(s), 1);
  await Promise.all([...done.map((s) => s.stop()), upstream?.stop()]);
  upstream = undefined;
  await store?.stop();
  store = undefined;
}
for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => void stopAll().finally(() => process.exit(130)));

async function start(name: string, cmd: string[], env: Record<string, string>, portVar: string): Promise<Server> {
  const port = await freePort();
  const s = await startOnPort({ name, cmd, env: { ...env, [portVar]: String(port) }, port, logDir });
  running.push(s);
  return s;
}

const memo = <T>(f: () => Promise<T>) => {
  let p: Promise<T> | undefined;
  return () => (p ??= f());
};
const relayMemory = memo(() => start("relay-memory", [RELAY_BIN], BROKER_ENV, "RELAY_PORT"));
const datastore = memo(async () => (store = await openRedisStore(undefined, TOKEN)));
const relayValkeyA = memo(async () => start("relay-valkey-a", [RELAY_BIN], { ...BROKER_ENV, ...(await datastore()).relayEnv }, "RELAY_PORT"));
const relayValkeyB = memo(async () => start("relay-valkey-b", [RELAY_BIN], { ...BROKER_ENV, ...(await datastore()).relayEnv }, "RELAY_PORT"));
const ceiling = memo(() => start("ceiling", [process.execPath, "run", "bench/ceiling-server.ts"], {}, "CEILING_PORT"));
const baseline = memo(() => start("baseline", [process.execPath, "run", "bench/baseline-server.ts"], {}, "BASELINE_PORT"));
const sseUpstream = memo(() => start("sse-upstream", withFdLimit([process.execPath, "run", "bench/sse-upstream.ts"]), {}, "SSE_PORT"));
const bareBin = memo(async () => compileBare(logDir));
const relayPython = memo(async () => {
  upstream = await startUpstreamRelay(TOKEN, { TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES: "1" });
  return upstream;
});

/** Why relay.py cannot run here, or undefined. */
function upstreamProblem(): string | undefined {
  if (!opts.upstream) return "--no-upstream";
  const p = peersProblems();
  return p.length > 0 ? p.join("; ") : undefined;
}
function valkeyProblem(): string | undefined {
  if (!opts.valkey) return "--state leaves Valkey out";
  return redisServerPath() ? undefined : "redis-server is not installed (apt-get install redis-server)";
}

// ------------------------------------------------------------------------------ sections

const skipped = (why: string): SectionResult => ({ body: `SKIPPED: ${why}`, targets: [], failures: [], json: { skipped: why } });

async function cycles(): Promise<SectionResult> {
  const server = (role: CycleServer["role"], s: { url: string; pid: number }): CycleServer => ({ role, url: s.url, token: TOKEN, pid: s.pid });
  const servers: CycleServer[] = [server("ceiling", await ceiling())];
  if (states.includes("memory")) servers.push(server("memory", await relayMemory()));
  const notes: string[] = [];
  const vp = valkeyProblem();
  if (vp) notes.push(`Valkey left out: ${vp}.`);
  else servers.push({ ...server("valkey", await relayValkeyA()), datastorePid: (await datastore()).pid });
  const up = upstreamProblem();
  if (up) notes.push(`upstream relay.py left out: ${up}.`);
  else servers.push(server("upstream", await relayPython()));
  const r = await cyclesSection(servers, { seconds: opts.seconds, rounds: opts.cycleRounds, pairs: opts.pairs, protocols: opts.protocols, log });
  return { ...r, body: [r.body, ...notes.map((n) => `\nSKIPPED in this section: ${n}`)].join("\n") };
}

export const WAKE_MEMORY_TARGET_MS = 5;
export const WAKE_CROSS_TARGET_MS = 20;

async function wake(): Promise<SectionResult> {
  const places: Place[] = [];
  const m = await relayMemory();
  places.push({ scope: "memory", hold: m.url, post: m.url });
  const vp = valkeyProblem();
  if (!vp) {
    const [a, b] = [await relayValkeyA(), await relayValkeyB()];
    places.push({ scope: "redis", hold: a.url, post: a.url }, { scope: "redisCrossReplica", hold: a.url, post: b.url });
  }
  log(`wake: ${opts.samples} samples x ${places.map((p) => p.scope).join(", ")}...`);
  const w = await wakeLatency(places, (await baseline()).url, { samples: opts.samples, settleMs: 5, nodeAuth: { "X-Relay-Server-Token": TOKEN } });
  const label = { memory: "memory store, one relay", redis: "Valkey, one relay", redisCrossReplica: "Valkey, held on relay A, woken via relay B" } as const;
  const rows: string[][] = [];
  const targets: Target[] = [];
  const json: Record<string, unknown> = { baselineRtt: w.baselineRtt, misses: w.misses };
  for (const p of places) {
    const s = w.series[p.scope]!;
    const poll = distribution(s.poll);
    const retrieve = distribution(s.retrieve);
    json[p.scope] = { poll, retrieve };
    for (const [what, d] of [["requests → held servers/poll", poll], ["responses → held responses/retrieve", retrieve]] as const) {
      rows.push([label[p.scope], what, msText(d.p50), msText(d.p99), msText(d.max), String(d.count)]);
      const limit = p.scope === "redisCrossReplica" ? WAKE_CROSS_TARGET_MS : p.scope === "memory" ? WAKE_MEMORY_TARGET_MS : undefined;
      if (limit !== undefined) targets.push({ what: `wake p99, ${label[p.scope]}: ${what}`, figure: msText(d.p99), target: `<= ${limit} ms`, met: d.count > 0 ? d.p99 <= limit : undefined });
    }
  }
  rows.push(["reference", "plain POST round trip to a bare Bun.serve", msText(w.baselineRtt.p50), msText(w.baselineRtt.p99), msText(w.baselineRtt.max), String(w.baselineRtt.count)]);
  const notes = vp ? `\n\nSKIPPED: Valkey (${vp}).` : "";
  return {
    body: markdown(["where", "wake", "p50", "p99", "max", "samples"], rows) + notes,
    targets,
    failures: w.misses > 0 ? [`wake: ${w.misses} sample(s) missed, first: ${w.firstMiss}`] : [],
    json,
  };
}

async function peers(): Promise<SectionResult> {
  const problems = peersProblems();
  if (problems.length > 0) return skipped(`the token.place peers cannot run here: ${problems.join("; ")} (TOKENPLACE_PEERS_DIR: ${PEERS_DIR})`);
  const failures: string[] = [];
  // Fresh relays: the fake nodes other sections registered would be offered to client.py by
  // servers/next, and no one answers for them.
  const m = await start("relay-peers", [RELAY_BIN], BROKER_ENV, "RELAY_PORT");
  log(`peers: ${opts.rounds} round trips through the relay...`);
  const ours = await runTokenplaceE2E(m.port, opts.rounds, TOKEN);
  await m.stop();
  if (ours.code !== 0) failures.push(`peers through the relay: ${ours.summary}\n${ours.stderr.slice(-1500)}`);
  let theirs: E2EResult | undefined;
  const up = upstreamProblem();
  if (!up) {
    log(`peers: ${opts.rounds} round trips through upstream relay.py (about 30 s each after the first)...`);
    const relayPy = await startUpstreamRelay(TOKEN);
    try {
      theirs = await runTokenplaceE2E(relayPy.port, opts.rounds, TOKEN);
    } finally {
      await relayPy.stop();
    }
    if (theirs.code !== 0) failures.push(`peers through upstream relay.py: ${theirs.summary}\n${theirs.stderr.slice(-1500)}`);
  }
  const row = (name: string, r: E2EResult | undefined) => [name, r ? `${r.medianS.toFixed(3)} s` : "not run", r ? `${r.ok}/${r.rounds}` : "", r ? r.roundSeconds.map((v) => v.toFixed(2)).join(", ") + " s" : ""];
  const speedup = ours && theirs ? theirs.medianS / ours.medianS : NaN;
  return {
    body: [
      markdown(["relay", "median round trip", "ok", "per round"], [row("tokenplace-relay (memory store)", ours), row("upstream relay.py", theirs)]),
      "",
      Number.isFinite(speedup) ? `The relay's median is ${ratioText(1 / speedup)} of upstream's (${speedup.toFixed(0)}x faster).` : `upstream relay.py not run: ${up}.`,
    ].join("\n"),
    targets: [],
    failures,
    json: { rounds: opts.rounds, relay: ours && { medianS: ours.medianS, roundSeconds: ours.roundSeconds, ok: ours.ok }, upstream: theirs && { medianS: theirs.medianS, roundSeconds: theirs.roundSeconds, ok: theirs.ok } },
  };
}

async function proxy(): Promise<SectionResult> {
  if (!NGINX_BIN) return skipped("nginx is not installed (apt-get install nginx-light)");
  const up = await sseUpstream();
  const relay = await start("relay-proxy", withFdLimit([RELAY_BIN]), { RELAY_HOST: "127.0.0.1", TOKENPLACE_RELAY_UPSTREAM_URL: up.url, BUN_CONFIG_MAX_HTTP_REQUESTS: "4096", RELAY_MAX_CONNECTIONS: "16384" }, "RELAY_PORT");
  const nginx = await startNginx(up.port, logDir);
  running.push(nginx);
  try {
    return await streamSection({ direct: up.port, nginx: nginx.port, relay: relay.port }, { concurrency: opts.streams, rounds: opts.proxyRounds, events: opts.events, gapMs: opts.gapMs, log });
  } finally {
    await Promise.all([relay.stop(), nginx.stop()]);
  }
}

async function memory(): Promise<SectionResult> {
  const up = await sseUpstream();
  const relayEnv = { RELAY_HOST: "127.0.0.1", TOKENPLACE_RELAY_UPSTREAM_URL: up.url, TOKEN_PLACE_RELAY_SERVER_TOKEN: TOKEN, RELAY_RATE_LIMITS: "off", RELAY_AUTH_FAILURE_LIMIT: "1000000/minute", ...memoryRelayEnv(opts.holds) };
  const relay = await start("relay-rss", withFdLimit([RELAY_BIN]), relayEnv, "RELAY_PORT");
  // The bare server also takes the same holds as the relay: as many sockets, as many descriptors.
  const bare = await start("bare-rss", withFdLimit([await bareBin()]), {}, "BASELINE_PORT");
  const cold = { relay: { bin: RELAY_BIN, env: { ...relayEnv, RELAY_PORT: "0" } }, bare: { bin: await bareBin(), env: { BASELINE_PORT: "0" } } };
  const floors = [
    { label: "native pipe", server: await start("bare-proxy-native", withFdLimit([await bareBin()]), { BASELINE_PROXY_UPSTREAM: up.url, BASELINE_PROXY_MODE: "native", BUN_CONFIG_MAX_HTTP_REQUESTS: String(opts.holds * 2) }, "BASELINE_PORT") },
    { label: "JavaScript pump", server: await start("bare-proxy-pump", withFdLimit([await bareBin()]), { BASELINE_PROXY_UPSTREAM: up.url, BASELINE_PROXY_MODE: "pump", BUN_CONFIG_MAX_HTTP_REQUESTS: String(opts.holds * 2) }, "BASELINE_PORT") },
  ];
  // Each proxied stream is two sockets in the relay (client and upstream): where the open-file
  // limit cannot be raised far enough, measure as many streams as fit and say so.
  const fdLimit = reachableFdLimit();
  const streams = Math.min(opts.holds, Math.floor((fdLimit - FD_HEADROOM) / 2));
  const note =
    streams < opts.holds
      ? `\n\nStreams: ${streams.toLocaleString("en-US")}, not ${opts.holds.toLocaleString("en-US")}: the open-file limit here is ${fdLimit.toLocaleString("en-US")} and cannot be raised ` +
        `(\`ulimit -n ${BENCH_FD_LIMIT}\` is refused), and every proxied stream holds two sockets in the relay, so ${opts.holds.toLocaleString("en-US")} streams need over ${(opts.holds * 2).toLocaleString("en-US")} descriptors in one process.`
      : "";
  try {
    const r = await memorySection(relay, bare, { holds: opts.holds, streams, settleMs: opts.settleMs, token: TOKEN, log, floors, cold });
    return { ...r, body: r.body + note };
  } finally {
    await Promise.all([relay.stop(), bare.stop(), ...floors.map((f) => f.server.stop())]);
  }
}

async function startup(): Promise<SectionResult> {
  return startupSection(RELAY_BIN, await bareBin(), opts.startupRuns, logDir, log);
}

const RUNNERS: Record<SectionId, () => Promise<SectionResult>> = { cycles, wake, peers, proxy, memory, startup };

// ------------------------------------------------------------------------------ main

function ensureBinary(): void {
  if (!opts.build && existsSync(RELAY_BIN)) return;
  log("building dist/ (npm run build)...");
  const r = Bun.spawnSync([process.execPath, "run", "scripts/build.ts"], { cwd: REPO, stdout: "inherit", stderr: "inherit" });
  if (r.exitCode !== 0) throw new Error("npm run build failed");
}

/** The commit the source tree is at, and whether src/ had changes not committed yet (the binary may include them). */
function sourceState(): string {
  const git = (...a: string[]) => Bun.spawnSync(["git", ...a], { cwd: REPO, stdout: "pipe", stderr: "ignore" }).stdout.toString().trim();
  const head = git("rev-parse", "--short", "HEAD");
  if (!head) return "source commit unknown";
  return `source at commit ${head}${git("status", "--porcelain", "--", "src") ? " with uncommitted changes in src/" : ""}`;
}

function python(): string {
  const venv = join(VENV, "bin/python");
  return existsSync(venv) ? venv : "python3";
}

async function main(): Promise<number> {
  const t0 = Date.now();
  const load0 = loadavg();
  ensureBinary();
  const relayBuilt = statSync(RELAY_BIN).mtime.toISOString();
  const results: Partial<Record<SectionId, SectionResult>> = {};
  let revision: string | undefined;
  try {
    for (const [i, id] of sections.entries()) {
      log(`section ${TITLES[id]}`);
      try {
        results[id] = await RUNNERS[id]();
      } catch (err) {
        results[id] = { body: `FAILED: ${err instanceof Error ? err.message : String(err)}`, targets: [], failures: [`${id}: ${err instanceof Error ? err.message : String(err)}`], json: undefined };
      }
      if (!revision) {
        const m = running.find((s) => s.name.startsWith("relay"));
        if (m) revision = revisionFromLog(m.logFile);
      }
      if (!sections.slice(i + 1).some((s) => s === "cycles" || s === "wake")) await stopBrokers();
    }
  } finally {
    await stopAll();
  }
  const load1 = loadavg();
  const cpu = cpus();
  const tools = toolVersions(python());
  const targets = sections.flatMap((id) => results[id]!.targets);
  const failures = sections.flatMap((id) => results[id]!.failures);
  const fmtLoad = (l: number[]) => l.map((v) => v.toFixed(2)).join(" / ");
  const shownArgs = args.filter((a) => !a.startsWith("--note=")); // the note has its own line
  const md = [
    "# tokenplace-relay benchmark results",
    "",
    `Produced by \`npm run bench${shownArgs.length ? ` -- ${shownArgs.join(" ")}` : ""}\` (bench/run.ts; docs/demo-and-bench.md explains every figure) on ${new Date(t0).toISOString()}, ${((Date.now() - t0) / 1000).toFixed(0)} s.`,
    "",
    markdown(
      ["machine", ""],
      [
        ["cores", String(cpu.length)],
        ["CPU", cpu[0]?.model.trim() ?? "unknown"],
        ["memory", `${(totalmem() / 2 ** 30).toFixed(1)} GiB`],
        ["load average (1 / 5 / 15 min) at start", fmtLoad(load0)],
        ["load average at end", fmtLoad(load1)],
        ["tools", Object.entries(tools).map(([k, v]) => `${k} ${v}`).join("; ")],
        ["relay", `dist/tokenplace-relay-linux-x64 built ${relayBuilt}${revision ? `, ${revision}` : ""}; ${sourceState()}`],
        ["open-file limit for servers", String(reachableFdLimit())],
      ],
    ),
    "",
    ...(opts.note ? [`Conditions: ${opts.note}`, ""] : []),
    "Everything runs on loopback on this one machine, load generators included, so every figure also pays for its client; " +
      "the servers it is compared with run in the same run, in rotating order. Shared machines are noisy: compare ratios, not absolute numbers.",
    "",
    "## Targets",
    "",
    `${targets.filter((t) => t.met).length} of ${targets.length} met.`,
    "",
    targets.length ? markdown(["target", "figure", "target value", ""], targets.map((t) => [t.what, t.figure, t.target, metText(t.met)])) : "(no section with targets ran)",
    "",
    ...sections.flatMap((id) => {
      const own = results[id]!.targets;
      // Each section's targets again beside its figures (the table above gathers them all).
      const beside = own.length ? ["", markdown(["target", "figure", "target value", ""], own.map((t) => [t.what, t.figure, t.target, metText(t.met)]))] : [];
      return [`## ${TITLES[id]}`, "", results[id]!.body, ...beside, ""];
    }),
    ...(failures.length ? ["## Failures", "", ...failures.map((f) => `- ${f.split("\n")[0]}`), ""] : []),
  ].join("\n");
  console.log(md);
  if (opts.out) {
    mkdirSync(join(opts.out, ".."), { recursive: true });
    writeFileSync(opts.out, md);
    log(`wrote ${opts.out}`);
  }
  console.log(`BENCH_JSON ${JSON.stringify({ sections, quick, cores: cpu.length, tools, targets, failures: failures.length, results: Object.fromEntries(sections.map((id) => [id, results[id]!.json])) })}`);
  for (const f of failures) console.error(`FAILED: ${f}`);
  return failures.length > 0 ? 1 : 0;
}

process.exitCode = await main();
