/**
 * `npm run bench:v1` (`bun run bench/v1.ts [--quick] [--state=memory,redis] [--redis-url=URL]
 * [--rounds=N] [--samples=N] [--duration-ms=N] [--concurrency=N] [--no-peers] [--no-upstream]
 * [--source]`): the API v1 E2EE relay protocol, measured in ONE run on this machine, for the
 * memory store and for Valkey/Redis shared state side by side, printed as a markdown table.
 *
 * (a) Unmodified token.place peers (../shared/peers: server.py with its mock LLM + client.py),
 *     `--rounds` back-to-back round trips (default 6) through this relay (once per state backend)
 *     and through upstream relay.py (started for the run, stopped after), medians with ratios.
 * (b) Wake latency of held polls: a fake node holds `servers/poll`, the client POSTs `requests`,
 *     time from that POST to the poll's answer; then the client holds `responses/retrieve`, the
 *     node POSTs `responses`, time from that POST to the retrieve's answer. A wake-up is posted
 *     only once the relay's `long_polls_waiting` gauge shows the request held. Measured on one
 *     relay per backend and, for Valkey/Redis, ACROSS REPLICAS: two relay processes on one
 *     datastore, held on relay A, woken by the POST to relay B (Pub/Sub). Each round of samples is
 *     paired with one plain POST round trip to a minimal Bun.serve (bench/baseline-server.ts):
 *     the floor. Backends alternate sample by sample, so machine drift hits all of them.
 * (c) Request-cycle rate: `--concurrency` fake node/client pairs each looping requests -> poll ->
 *     responses -> retrieve, cycles/s per backend (and, for Valkey/Redis, with the clients on
 *     relay B and the nodes on relay A), against plain POSTs/s to the baseline at that
 *     concurrency; rounds interleaved.
 *
 * `--state` picks the backends (default: both when redis-server is installed or `--redis-url` is
 * given, else memory with a printed note). Valkey/Redis is a private redis-server on a loopback
 * port (bench/state.ts) unless `--redis-url` names one. The relay is the compiled binary
 * (dist/tokenplace-relay-linux-x64) when built, else src/main.ts (`--source` forces that).
 * `--quick` (bench smoke test) skips (a) and shortens (b) and (c). Payloads are random base64 of
 * real sizes: the relay never opens them. Exit 1 if any round, sample or cycle failed.
 */
import { existsSync } from "node:fs";
import { distribution, mergeLoad, runLoad, type Distribution, type LoadResult } from "./load.ts";
import { peersProblems, RELAY_BIN, runTokenplaceE2E, startUpstreamRelay, type E2EResult, type UpstreamRelay } from "./peers.ts";
import { machineFacts, msText, rate } from "./report.ts";
import { fakeKey } from "./scenarios.ts";
import { addStats, chooseStates, commandDelta, openRedisStore, processCpuMs, STATE_LABEL, type CommandStats, type StateBackend, type StateStore } from "./state.ts";
import { revisionOf, spawnListening, type Child } from "./child.ts";
import { b64, describe, post, registerNode as registerV1Node, v1Bodies, wakeLatency, type Place, type Scope, type WakeSeries } from "./v1-wake.ts";
import { benchArgs } from "./args.ts";

// ------------------------------------------------------------------------------ options

const ARGS = benchArgs("bench/v1.ts", {
  quick: "flag",
  peers: "flag",
  "no-peers": "flag",
  "no-upstream": "flag",
  source: "flag",
  rounds: "count",
  samples: "count",
  "duration-ms": "count",
  concurrency: "count",
  "redis-url": "text",
  // Read by chooseStates (bench/state.ts).
  state: "list",
  states: "list",
});
const flag = (name: "quick" | "peers" | "no-peers" | "no-upstream" | "source") => ARGS[name];

const quick = flag("quick");
const opts = {
  quick,
  peers: flag("peers") || (!quick && !flag("no-peers")),
  upstream: !flag("no-upstream"),
  rounds: ARGS.rounds ?? 6,
  samples: ARGS.samples ?? (quick ? 20 : 200),
  durationMs: ARGS["duration-ms"] ?? (quick ? 300 : 3_000),
  concurrency: ARGS.concurrency ?? 8,
  cycleRounds: quick ? 1 : 3,
  warmupMs: quick ? 100 : 300,
  /** Lets a poll or retrieve reach the relay before the gauge is asked whether it is held. */
  settleMs: 5,
  source: flag("source") || !existsSync(RELAY_BIN),
  /** An existing Valkey/Redis instead of a private redis-server (printed without credentials). */
  redisUrl: ARGS["redis-url"],
};

/** Targets from the task: Valkey cycles >= 0.5x memory; cross-replica wake p99 <= 50 ms. */
const CYCLE_RATIO_TARGET = 0.5;
const CROSS_WAKE_TARGET_MS = 50;

const RUN_ID = crypto.randomUUID();
const TOKEN = `bench-v1-${RUN_ID}`;
const NODE_AUTH = { "X-Relay-Server-Token": TOKEN };

// ------------------------------------------------------------------------------ (c) cycle rate

/** A place for request cycles: the client (requests, retrieve) on `client`, the node (poll, responses) on `node`. */
interface CyclePlace {
  scope: Scope;
  client: string;
  node: string;
}

/** What a round of cycles cost: CPU ms per process role, and datastore commands (Valkey/Redis). */
interface Cost {
  cpuMs: Record<string, number>;
  commands: CommandStats;
}
interface Meter {
  /** CPU ms used so far, by role ("relay", "relay B", "datastore", "load generator"). */
  cpu(scope: Scope): Promise<Record<string, number>>;
  commands?: () => Promise<CommandStats>;
}

/**
 * Cycles/s per place, rounds interleaved with plain POSTs to the baseline. `meter` is read around
 * each measured round: CPU time of the processes involved and, for Valkey/Redis, commands per cycle.
 */
async function cycleRates(places: CyclePlace[], baseline: string, meter: Meter) {
  const load = (iteration: (w: number) => Promise<boolean>, durationMs: number) =>
    runLoad({ concurrency: opts.concurrency, durationMs, maxIterations: 10_000_000, iteration });
  let seq = 0;
  const cycles = await Promise.all(
    places.map(async (p) => {
      const workers = await Promise.all(Array.from({ length: opts.concurrency }, async () => v1Bodies(await registerV1Node(p.node, NODE_AUTH), fakeKey())));
      return async (w: number) => {
        const b = workers[w]!;
        const id = `bench-v1-cycle-${p.scope}-${w}-${++seq}`;
        const q = await post(`${p.client}/api/v1/relay/requests`, b.request(id));
        if (q.status !== 200) throw new Error(`${p.scope}: requests: ${describe(q)}`);
        const work = await post(`${p.node}/api/v1/relay/servers/poll`, b.poll, NODE_AUTH);
        if (work.status !== 200 || work.json.request_id !== id) throw new Error(`${p.scope}: servers/poll: ${describe(work)}`);
        const r = await post(`${p.node}/api/v1/relay/responses`, b.response(id), NODE_AUTH);
        if (r.status !== 200) throw new Error(`${p.scope}: responses: ${describe(r)}`);
        const got = await post(`${p.client}/api/v1/relay/responses/retrieve`, b.retrieve(id));
        return got.status === 200 && got.json.request_id === id;
      };
    }),
  );
  const plain = JSON.stringify({ chat_history: b64(512) });
  const basePost = async () => (await post(`${baseline}/plain`, plain)).status === 200;

  for (const c of cycles) await load(c, opts.warmupMs); // JIT, scripts and connection pools warm
  await load(basePost, opts.warmupMs);
  const roundMs = Math.max(100, Math.floor(opts.durationMs / opts.cycleRounds));
  const results: LoadResult[][] = places.map(() => []);
  const costs: Cost[] = places.map(() => ({ cpuMs: {}, commands: {} }));
  const base: LoadResult[] = [];
  for (let r = 0; r < opts.cycleRounds; r++) {
    // Interleaved, so machine drift hits every backend and the baseline alike.
    for (let k = 0; k < cycles.length; k++) {
      const scope = places[k]!.scope;
      const counted = meter.commands && scope !== "memory";
      const [cpu0, cmd0] = [await meter.cpu(scope), counted ? await meter.commands!() : undefined];
      results[k]!.push(await load(cycles[k]!, roundMs));
      const [cpu1, cmd1] = [await meter.cpu(scope), counted ? await meter.commands!() : undefined];
      for (const [role, ms] of Object.entries(cpu1)) costs[k]!.cpuMs[role] = (costs[k]!.cpuMs[role] ?? 0) + ms - (cpu0[role] ?? 0);
      if (counted) addStats(costs[k]!.commands, commandDelta(cmd0!, cmd1!));
    }
    base.push(await load(basePost, roundMs));
  }
  return {
    byScope: Object.fromEntries(places.map((p, k) => [p.scope, mergeLoad(results[k]!)])) as Partial<Record<Scope, ReturnType<typeof mergeLoad>>>,
    costs: Object.fromEntries(places.map((p, k) => [p.scope, costs[k]!])) as Partial<Record<Scope, Cost>>,
    baseline: mergeLoad(base),
  };
}

// ------------------------------------------------------------------------------ report

const sec = (s: number) => (Number.isFinite(s) ? `${s.toFixed(3)} s` : "n/a");
const x = (r: number) => (Number.isFinite(r) && r > 0 ? `${r < 0.1 ? r.toFixed(4) : r.toFixed(2)}x` : "n/a");
const round3 = (n: number) => (Number.isFinite(n) ? Math.round(n * 1000) / 1000 : null);

function markdown(head: string[], rows: string[][]): string {
  const esc = (c: string) => c.replaceAll("|", "\\|");
  return [head, head.map(() => "---"), ...rows].map((r) => `| ${r.map(esc).join(" | ")} |`).join("\n");
}

function e2eCell(r: E2EResult | undefined): string {
  if (!r) return "not run";
  return `${sec(r.medianS)} (${r.ok}/${r.rounds} ok)`;
}

// ------------------------------------------------------------------------------ main

let upstream: UpstreamRelay | undefined;
let store: StateStore | undefined;
const children: Child[] = [];
const stopAll = async () => {
  await Promise.all([upstream?.stop(), ...children.map((c) => c.stop())]);
  await store?.stop();
};
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    void stopAll().finally(() => process.exit(130));
  });
}

async function main(): Promise<number> {
  const relayOutput: Record<string, Child> = {};
  try {
    const choice = chooseStates(process.argv, opts.redisUrl);
    const states = choice.states;
    const both = states.includes("memory") && states.includes("redis");
    const facts = machineFacts();
    const relayCmd = opts.source ? [process.execPath, "run", "src/main.ts"] : [RELAY_BIN];
    if (states.includes("redis")) store = await openRedisStore(opts.redisUrl, RUN_ID);

    console.log(`tokenplace-relay API v1 benchmark${quick ? " (quick)" : ""}`);
    console.log(Object.entries(facts).map(([k, v]) => `${k}: ${v}`).join(" | "));
    console.log(
      `relay: ${opts.source ? "bun run src/main.ts" : "dist/tokenplace-relay-linux-x64 (compiled)"}; loopback only; state: ${states.join(", ")}` +
        `${store ? ` (${store.describe}; relays A and B share it)` : ""}; ` +
        `${opts.samples} wake samples per figure; ${opts.concurrency} concurrent node/client pairs for ${opts.durationMs} ms per backend`,
    );
    if (choice.note) console.log(choice.note);

    // Quotas off: one loopback address sends thousands of requests, and dozens of authenticated
    // node requests at once (a relay that does not know these settings warns and ignores them).
    const relayEnv = {
      RELAY_PORT: "0", RELAY_HOST: "127.0.0.1", TOKENPLACE_RELAY_ONLY: "true", LOG_LEVEL: "warn", TOKEN_PLACE_RELAY_SERVER_TOKEN: TOKEN,
      RELAY_RATE_LIMITS: "off", RELAY_AUTH_FAILURE_LIMIT: "1000000/minute",
    };
    const spawn = async (name: string, cmd: string[], env: Record<string, string>) => {
      const c = await spawnListening(cmd, env);
      children.push(c);
      relayOutput[name] = c;
      return c;
    };
    const [baseline, memory, relayA, relayB] = await Promise.all([
      spawn("baseline", [process.execPath, "run", "bench/baseline-server.ts"], {}),
      states.includes("memory") ? spawn("memory relay", relayCmd, relayEnv) : undefined,
      store ? spawn("redis relay A", relayCmd, { ...relayEnv, ...store.relayEnv }) : undefined,
      store ? spawn("redis relay B", relayCmd, { ...relayEnv, ...store.relayEnv }) : undefined,
    ]);
    const one: Partial<Record<StateBackend, Child>> = { memory, redis: relayA };
    const build = revisionOf(memory ?? relayA);
    console.log(build ? `relay build: ${build}\n` : "");

    const failures: string[] = [];
    const rows: string[][] = [];
    const json: Record<string, unknown> = { facts, params: { ...opts, redisUrl: opts.redisUrl ? "(given)" : undefined, states }, relayBuild: build, redis: store?.describe };
    // Columns: measure | one per backend | Valkey/Redis ÷ memory (both run) | reference.
    const row = (measure: string, cells: Partial<Record<StateBackend, string>>, ratio: string, ref: string) =>
      rows.push([measure, ...states.map((s) => cells[s] ?? ""), ...(both ? [ratio] : []), ref]);

    // (a) the real peers, through each backend's relay, then upstream's relay (each with its own fresh node).
    if (opts.peers) {
      const problems = peersProblems();
      if (problems.length > 0) {
        console.log(`SKIPPED peers part: ${problems.join("; ")}`);
      } else {
        const ours: Partial<Record<StateBackend, E2EResult>> = {};
        for (const s of states) {
          console.error(`peers: ${opts.rounds} back-to-back round trips through tokenplace-relay (${STATE_LABEL[s]})...`);
          const r = await runTokenplaceE2E(one[s]!.port, opts.rounds, TOKEN);
          if (r.code !== 0) failures.push(`peers through tokenplace-relay (${s}): ${r.summary}\n${r.stderr.slice(-1500)}`);
          ours[s] = r;
        }
        let theirs: E2EResult | undefined;
        if (opts.upstream) {
          console.error(`peers: ${opts.rounds} back-to-back round trips through upstream relay.py (about 30 s per round after the first)...`);
          try {
            upstream = await startUpstreamRelay(TOKEN);
            theirs = await runTokenplaceE2E(upstream.port, opts.rounds, TOKEN);
            if (theirs.code !== 0) failures.push(`peers through upstream relay.py: ${theirs.summary}\n${theirs.stderr.slice(-1500)}`);
          } finally {
            await upstream?.stop();
            upstream = undefined;
          }
        }
        const vsUpstream = (r: E2EResult | undefined) => (r && theirs ? ` (${x(r.medianS / theirs.medianS)}, ${(theirs.medianS / r.medianS).toFixed(0)}x faster)` : "");
        row(
          `unmodified server.py + client.py, ${opts.rounds} back-to-back round trips: median`,
          Object.fromEntries(states.map((s) => [s, e2eCell(ours[s]) + vsUpstream(ours[s])])),
          both ? x(ours.redis!.medianS / ours.memory!.medianS) : "",
          theirs ? `upstream relay.py: ${e2eCell(theirs)}` : "upstream relay.py: not run",
        );
        row(
          "  per round",
          Object.fromEntries(states.map((s) => [s, ours[s]!.roundSeconds.map((v) => v.toFixed(2)).join(", ") + " s"])),
          "",
          theirs ? `upstream: ${theirs.roundSeconds.map((v) => v.toFixed(2)).join(", ")} s` : "",
        );
        const e2eJson = (r: E2EResult) => ({ ok: r.ok, rounds: r.rounds, medianS: r.medianS, roundSeconds: r.roundSeconds });
        json.peers = {
          ...Object.fromEntries(states.map((s) => [s, e2eJson(ours[s]!)])),
          upstream: theirs && e2eJson(theirs),
        };
      }
    }

    // (b) wake latency of the two held polls: one relay per backend, and across Valkey/Redis replicas.
    const wakePlaces: Place[] = [];
    if (memory) wakePlaces.push({ scope: "memory", hold: memory.url, post: memory.url });
    if (relayA && relayB) {
      wakePlaces.push({ scope: "redis", hold: relayA.url, post: relayA.url });
      wakePlaces.push({ scope: "redisCrossReplica", hold: relayA.url, post: relayB.url });
    }
    console.error(`wake latency: ${opts.samples} samples x ${wakePlaces.map((p) => p.scope).join(", ")}...`);
    const wake = await wakeLatency(wakePlaces, baseline.url, { samples: opts.samples, settleMs: opts.settleMs, nodeAuth: NODE_AUTH });
    if (wake.misses > 0) failures.push(`${wake.misses} wake sample(s) missed, first: ${wake.firstMiss}`);
    const rtt = wake.baselineRtt;
    const dist = (scope: Scope, what: keyof WakeSeries) => (wake.series[scope] ? distribution(wake.series[scope][what]) : undefined);
    const wakeJson: Record<string, unknown> = { baselineRtt: rtt, misses: wake.misses };
    for (const p of wakePlaces) wakeJson[p.scope] = { poll: dist(p.scope, "poll"), retrieve: dist(p.scope, "retrieve"), requestAck: dist(p.scope, "requestAck") };
    json.wakeMs = wakeJson;
    const vsRtt = (d: Distribution | undefined, q: "p50" | "p99") => (d ? `${msText(d[q])} (${x(d[q] / rtt[q])})` : "");
    const wakeRows = (label: string, what: "poll" | "retrieve") => {
      const mem = dist("memory", what);
      const red = dist("redis", what);
      const count = (mem ?? red)?.count ?? 0;
      for (const q of ["p50", "p99"] as const) {
        row(`${label}, one relay: ${q} (${count} samples)`, { memory: vsRtt(mem, q), redis: vsRtt(red, q) }, mem && red ? x(red[q] / mem[q]) : "", `plain POST RTT ${q}: ${msText(rtt[q])}`);
      }
      row("  max", { memory: mem ? msText(mem.max) : "", redis: red ? msText(red.max) : "" }, "", `plain POST RTT max: ${msText(rtt.max)}`);
    };
    const crossRows = (label: string, what: "poll" | "retrieve") => {
      const cross = dist("redisCrossReplica", what);
      const mem = dist("memory", what);
      if (!cross) return;
      for (const q of ["p50", "p99"] as const) {
        row(`${label}: ${q} (${cross.count} samples)`, { memory: "n/a (one process)", redis: vsRtt(cross, q) }, mem ? x(cross[q] / mem[q]) : "", `plain POST RTT ${q}: ${msText(rtt[q])}`);
      }
      row("  max", { memory: "", redis: msText(cross.max) }, "", `plain POST RTT max: ${msText(rtt.max)}`);
    };
    wakeRows("held servers/poll woken by POST requests", "poll");
    wakeRows("held responses/retrieve woken by POST responses", "retrieve");
    crossRows("held servers/poll on relay A woken by POST requests on relay B", "poll");
    crossRows("held responses/retrieve on relay A woken by POST responses on relay B", "retrieve");
    {
      const mem = dist("memory", "requestAck");
      const red = dist("redis", "requestAck");
      row("POST requests acknowledged, one relay: p50", { memory: vsRtt(mem, "p50"), redis: vsRtt(red, "p50") }, mem && red ? x(red.p50 / mem.p50) : "", `plain POST RTT p50: ${msText(rtt.p50)}`);
    }

    // (c) full request cycles.
    const cyclePlaces: CyclePlace[] = [];
    if (memory) cyclePlaces.push({ scope: "memory", client: memory.url, node: memory.url });
    if (relayA && relayB) {
      cyclePlaces.push({ scope: "redis", client: relayA.url, node: relayA.url });
      cyclePlaces.push({ scope: "redisCrossReplica", client: relayB.url, node: relayA.url });
    }
    console.error(`request cycles: ${opts.concurrency} pairs, ${opts.cycleRounds} round(s) x ${cyclePlaces.map((p) => p.scope).join(", ")}, plain POST...`);
    const meter: Meter = {
      async cpu(scope) {
        const roles: [string, number | undefined][] =
          scope === "memory" ? [["relay", memory?.pid]]
          : [["relay", relayA?.pid], ["relay B", relayB?.pid], ["datastore", store?.pid]];
        const out: Record<string, number> = {};
        for (const [role, pid] of roles) if (pid !== undefined) out[role] = await processCpuMs(pid);
        const self = process.cpuUsage();
        out["load generator"] = (self.user + self.system) / 1000;
        return out;
      },
    };
    if (store) meter.commands = store.commandStats;
    const c = await cycleRates(cyclePlaces, baseline.url, meter);
    for (const [scope, r] of Object.entries(c.byScope)) {
      if (r.failed > 0) failures.push(`${scope}: ${r.failed} request cycle(s) failed, first: ${r.firstError}`);
    }
    const cyc = (scope: Scope) => c.byScope[scope]?.perSecond;
    const cycleRatio = both ? cyc("redis")! / cyc("memory")! : NaN;
    const cycleMet = cycleRatio >= CYCLE_RATIO_TARGET;
    const cell = (n: number | undefined, unit: string, vs?: number) => (n === undefined ? "" : `${rate(n, unit)}${vs ? ` (${x(n / vs)})` : ""}`);
    row(
      `requests -> poll -> responses -> retrieve cycles, ${opts.concurrency} pairs, one relay`,
      { memory: cell(cyc("memory"), "cycles/s"), redis: cell(cyc("redis"), "cycles/s") },
      both ? `${x(cycleRatio)} (target >= ${CYCLE_RATIO_TARGET}x: ${cycleMet ? "met" : "NOT met"})` : "",
      "",
    );
    const asReq = (n: number | undefined) => (n === undefined ? undefined : n * 4);
    row(
      "  as HTTP requests/s (4 per cycle) vs plain POST",
      { memory: cell(asReq(cyc("memory")), "req/s", c.baseline.perSecond), redis: cell(asReq(cyc("redis")), "req/s", c.baseline.perSecond) },
      both ? x(cycleRatio) : "",
      `plain POST: ${rate(c.baseline.perSecond, "req/s")}`,
    );
    if (cyc("redisCrossReplica") !== undefined) {
      const v = cyc("redisCrossReplica")!;
      row(
        "  same cycles, clients on relay B, nodes on relay A",
        { memory: "n/a (one process)", redis: cell(v, "cycles/s") },
        cyc("memory") !== undefined ? x(v / cyc("memory")!) : "",
        "",
      );
    }
    // What a cycle costs the datastore. A script's usec includes the commands it ran (which are
    // also counted under their own names), so datastore time is the scripts' plus PUBLISH's.
    const perCycle = (scope: Scope) => {
      const cmds = c.costs[scope]?.commands;
      const done = c.byScope[scope]?.completed ?? 0;
      if (!cmds || done === 0 || Object.keys(cmds).length === 0) return undefined;
      const get = (k: string) => cmds[k] ?? { calls: 0, usec: 0 };
      const scripts = get("evalsha").calls + get("eval").calls;
      const publish = get("publish").calls;
      const all = Object.values(cmds).reduce((t, v) => t + v.calls, 0);
      const usec = get("evalsha").usec + get("eval").usec + get("publish").usec;
      const r2 = (n: number) => Math.round((n / done) * 100) / 100;
      return { scripts: r2(scripts), publish: r2(publish), otherCommands: r2(all - scripts - publish), datastoreUsec: r2(usec) };
    };
    const costCell = (scope: Scope) => {
      const p = perCycle(scope);
      return p ? `${p.scripts.toFixed(1)} scripts + ${p.publish.toFixed(1)} PUBLISH (which run ${p.otherCommands.toFixed(0)} commands); ${Math.round(p.datastoreUsec)} µs of datastore time` : "";
    };
    if (perCycle("redis")) {
      row("  Valkey/Redis per cycle, one relay (INFO commandstats)", { memory: "", redis: costCell("redis") }, "", "");
    }
    // CPU ms per cycle of each process involved (/proc): where a backend's cycles go on this machine.
    const cpuPerCycle = (scope: Scope) => {
      const cost = c.costs[scope];
      const done = c.byScope[scope]?.completed ?? 0;
      if (!cost || done === 0 || Object.values(cost.cpuMs).some((v) => !Number.isFinite(v))) return undefined;
      return Object.fromEntries(Object.entries(cost.cpuMs).map(([role, ms]) => [role, Math.round((ms / done) * 1000) / 1000]));
    };
    const serverCpu = (scope: Scope) => {
      const p = cpuPerCycle(scope);
      return p ? Object.entries(p).filter(([role]) => role !== "load generator").reduce((t, [, v]) => t + v, 0) : NaN;
    };
    const cpuCell = (scope: Scope) => {
      const p = cpuPerCycle(scope);
      return p ? Object.entries(p).map(([role, v]) => `${role} ${v.toFixed(2)}`).join(" + ") + " ms" : "";
    };
    if (cpuPerCycle("memory") || cpuPerCycle("redis")) {
      row(
        "  CPU ms per cycle, one relay (/proc)",
        { memory: cpuCell("memory"), redis: cpuCell("redis") },
        both ? `${x(serverCpu("redis") / serverCpu("memory"))} (relays + datastore)` : "",
        "",
      );
    }
    const cycJson = (scope: Scope) => {
      const r = c.byScope[scope];
      return r && { perSecond: Math.round(r.perSecond), completed: r.completed, failed: r.failed, cpuMsPerCycle: cpuPerCycle(scope), datastorePerCycle: perCycle(scope) };
    };
    json.cycles = {
      ...Object.fromEntries(cyclePlaces.map((p) => [p.scope, cycJson(p.scope)])),
      baselinePostsPerSecond: Math.round(c.baseline.perSecond),
      redisToMemory: both ? round3(cycleRatio) : undefined,
    };

    const head = ["measure", ...states.map((s) => STATE_LABEL[s]), ...(both ? ["Valkey/Redis ÷ memory"] : []), "reference (same run)"];
    console.log(markdown(head, rows));
    console.log(
      `\nIn a backend's cell, (Nx) is its ratio to the row's reference: < 1 is faster for latencies, > 1 is more per second for rates.` +
        (both ? ` "Valkey/Redis ÷ memory" compares the two backends (cross-replica rows: against memory on one relay).` : "") +
        ` CPU per cycle: every process involved, from /proc (relay B only forwards Pub/Sub in the one-relay runs; the load generator is this bench).` +
        ` The peers' rounds include client.py's crypto and, for upstream, server.py's 30 s lease sleep after each job.`,
    );

    const targets: Record<string, unknown> = {};
    if (both) {
      console.log(`target: Valkey/Redis request cycles >= ${CYCLE_RATIO_TARGET}x memory: ${cycleMet ? "met" : "NOT met"} (${x(cycleRatio)}: ${rate(cyc("redis")!, "cycles/s")} vs ${rate(cyc("memory")!, "cycles/s")})`);
      targets.cycleRatio = { target: CYCLE_RATIO_TARGET, value: round3(cycleRatio), met: cycleMet };
    }
    if (wake.series.redisCrossReplica) {
      const s = wake.series.redisCrossReplica;
      const [pd, rd] = [distribution(s.poll), distribution(s.retrieve)];
      const over = [...s.poll, ...s.retrieve].filter((v) => v >= CROSS_WAKE_TARGET_MS).length;
      // Judged at p99: on a shared machine one descheduled sample can exceed any bound; report it.
      const met = pd.p99 <= CROSS_WAKE_TARGET_MS && rd.p99 <= CROSS_WAKE_TARGET_MS;
      console.log(
        `target: cross-replica wake p99 <= ${CROSS_WAKE_TARGET_MS} ms: ${met ? "met" : "NOT met"} ` +
          `(servers/poll p99 ${msText(pd.p99)}, responses/retrieve p99 ${msText(rd.p99)}; ${over} of ${pd.count + rd.count} samples >= ${CROSS_WAKE_TARGET_MS} ms)`,
      );
      targets.crossReplicaWakeP99Ms = { target: CROSS_WAKE_TARGET_MS, poll: round3(pd.p99), retrieve: round3(rd.p99), met, samplesAtOrOver: over };
    }
    json.targets = targets;
    for (const f of failures) console.log(`FAILED: ${f}`);
    json.failures = failures.length;
    console.log(`BENCH_V1_JSON ${JSON.stringify(json)}`);
    return failures.length > 0 ? 1 : 0;
  } catch (err) {
    console.error(`bench:v1 failed: ${err instanceof Error ? err.message : String(err)}`);
    for (const [name, c] of Object.entries(relayOutput)) {
      if (name !== "baseline" && c.output.length > 0) console.error(`${name} output (last lines):\n${c.output.slice(-10).join("\n")}`);
    }
    return 1;
  } finally {
    await stopAll();
  }
}

process.exitCode = await main();
