/**
 * Section "cycles" of `npm run bench`: broker cycles per second with 1, 2 and 16 concurrent
 * node/client pairs, API v1 (requests -> servers/poll -> responses -> responses/retrieve, each
 * node registered once) and legacy (/faucet -> /sink -> /source -> /retrieve), driven by wrk with
 * bench/wrk/cycle.lua: `wrk -t P -c P`, one thread and one keep-alive connection per pair, each
 * step checked before the next is sent. Every server gets fresh pairs for every run, so nothing a
 * previous run left behind (a cycle cut off by wrk's deadline) can answer for this one.
 *
 * Servers, in rotating order per run so drift hits all alike: the ceiling (bench/ceiling-server.ts,
 * a bare Bun.serve with plain Maps), the relay on the memory store, the relay on Valkey/Redis, and
 * upstream relay.py. Figures: cycles/s, the relay as a share of the ceiling and a multiple of
 * upstream, and p50/p99 of each step (timed in the Lua script with the monotonic clock).
 */
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO } from "./peers.ts";
import { fakeKey } from "./scenarios.ts";
import { b64, post, registerNode as registerV1Node, v1Bodies } from "./v1-wake.ts";
import { markdown, msText, pctText, rate, ratioText, type SectionResult, type Target } from "./report.ts";
import { postJson } from "./load.ts";

export type Protocol = "v1" | "legacy";
export const PROTOCOLS: Protocol[] = ["v1", "legacy"];
export const PAIRS = [1, 2, 16];
const STEP_NAMES: Record<Protocol, string[]> = {
  v1: ["requests", "servers/poll", "responses", "responses/retrieve"],
  legacy: ["/faucet", "/sink", "/source", "/retrieve"],
};
const STEP_PATHS: Record<Protocol, string[]> = {
  v1: ["/api/v1/relay/requests", "/api/v1/relay/servers/poll", "/api/v1/relay/responses", "/api/v1/relay/responses/retrieve"],
  legacy: ["/faucet", "/sink", "/source", "/retrieve"],
};

/** Targets from the issue. */
export const CEILING_SHARE_TARGET = 0.85;
export const UPSTREAM_MULTIPLE_TARGET = 50;
export const VALKEY_SHARE_TARGET = 0.5;

export type ServerRole = "ceiling" | "memory" | "valkey" | "upstream";
export const ROLE_LABEL: Record<ServerRole, string> = {
  ceiling: "ceiling (bare Bun.serve, Maps)",
  memory: "relay, memory store",
  valkey: "relay, Valkey store",
  upstream: "upstream relay.py",
};

export interface CycleServer {
  role: ServerRole;
  url: string;
  /** The registration token its nodes send (none for the ceiling). */
  token: string;
  /** Its process, whose CPU time per cycle is reported (absent: not reported). */
  pid?: number;
  /** The datastore's process (Valkey/Redis) whose CPU time per cycle is reported beside it. */
  datastorePid?: number;
}

export interface StepLatency {
  p50: number;
  p99: number;
  count: number;
}

export interface CycleRun {
  protocol: Protocol;
  pairs: number;
  role: ServerRole;
  cyclesPerSecond: number;
  cycles: number;
  errors: number;
  socketErrors: number;
  firstError: string;
  steps: StepLatency[];
  durationS: number;
  /** The Lua script's buckets per step ("bucket:count,..."), kept so rounds can be merged. */
  hist: string[];
  /** CPU time the server's process used during the run, all its threads (µs); NaN: not known. */
  cpuUs: number;
  /** CPU time of the datastore's process over the same runs (NaN: no datastore, or not ours to read). */
  datastoreCpuUs: number;
}

/**
 * User and system time of a process, all threads, in µs (/proc/PID/stat fields 14 and 15, in clock
 * ticks of 100 Hz on Linux), NaN where /proc cannot tell. The same for the relay and the ceiling,
 * and steadier than throughput on a shared machine: another process's load slows a server's
 * cycles, not what each cycle costs it.
 */
export function processCpuUs(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) * CLOCK_TICK_US;
  } catch {
    return NaN;
  }
}
/** µs per clock tick of /proc/PID/stat (USER_HZ, 100 on Linux). */
const CLOCK_TICK_US = 10_000;

/** Percentiles from the Lua script's buckets (10 µs below 100 ms, 1 ms above), in ms. */
export function histogramPercentiles(cells: string): StepLatency {
  const buckets = cells
    .split(",")
    .filter(Boolean)
    .map((c) => c.split(":").map(Number) as [number, number])
    .sort((a, b) => a[0] - b[0]);
  const count = buckets.reduce((t, [, n]) => t + n, 0);
  const mid = (b: number) => (b < 10_000 ? b * 10 + 5 : (b - 10_000) * 1_000 + 500) / 1_000;
  const at = (q: number) => {
    const rank = Math.max(1, Math.ceil(q * count));
    let seen = 0;
    for (const [b, n] of buckets) if ((seen += n) >= rank) return mid(b);
    return NaN;
  };
  return { p50: at(0.5), p99: at(0.99), count };
}

/** A legacy node registered the way the peers do it: its first /sink. */
async function registerLegacyNode(url: string, key: string, token: string): Promise<void> {
  // Our relay holds the first /sink (nothing queued yet); upstream answers at once. Either way the
  // node is registered once /faucet stops answering 404, and whatever that job was is then drained.
  const held = fetch(`${url}/sink`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Relay-Server-Token": token },
    body: JSON.stringify({ server_public_key: key }),
    signal: AbortSignal.timeout(30_000),
  }).then(async (r) => ({ status: r.status, json: (await r.json()) as Record<string, unknown> }));
  held.catch(() => {});
  const job = JSON.stringify({ server_public_key: key, client_public_key: fakeKey(), chat_history: b64(64), cipherkey: b64(32), iv: b64(16) });
  for (let i = 0; ; i++) {
    const { status, json } = await postJson(`${url}/faucet`, job);
    if (status === 200) break;
    if (status !== 404 || i > 400) throw new Error(`/faucet while registering a legacy node: ${status} ${JSON.stringify(json)}`);
    await Bun.sleep(5);
  }
  const first = await held;
  if (first.status !== 200) throw new Error(`/sink registering a legacy node: ${first.status} ${JSON.stringify(first.json)}`);
  if (typeof first.json.chat_history !== "string") {
    const drained = await post(`${url}/sink`, { server_public_key: key }, { "X-Relay-Server-Token": token });
    if (drained.status !== 200 || typeof drained.json.chat_history !== "string") throw new Error(`/sink draining the registration job: ${drained.status}`);
  }
}

/** One line per wrk thread: protocol, then path and body of each step ("@ID@": the request id). */
async function cycleLines(protocol: Protocol, s: CycleServer, pairs: number): Promise<string[]> {
  const auth = { "X-Relay-Server-Token": s.token };
  return Promise.all(
    Array.from({ length: pairs }, async () => {
      const nodeKey = fakeKey();
      const clientKey = fakeKey();
      let bodies: string[];
      if (protocol === "v1") {
        // The ceiling checks nothing, so its node needs no registration.
        bodies = stepsV1(s.role === "ceiling" ? nodeKey : await registerV1Node(s.url, auth), clientKey);
      } else {
        if (s.role !== "ceiling") await registerLegacyNode(s.url, nodeKey, s.token);
        const payload = { chat_history: b64(512), cipherkey: b64(256), iv: b64(16) };
        bodies = [
          JSON.stringify({ server_public_key: nodeKey, client_public_key: clientKey, ...payload }),
          JSON.stringify({ server_public_key: nodeKey }),
          JSON.stringify({ client_public_key: clientKey, ...payload }),
          JSON.stringify({ client_public_key: clientKey }),
        ];
      }
      return [protocol, ...STEP_PATHS[protocol].flatMap((p, k) => [p, bodies[k]!])].join("\t");
    }),
  );
}

function stepsV1(nodeKey: string, clientKey: string): string[] {
  const b = v1Bodies(nodeKey, clientKey);
  return [b.request("@ID@"), b.poll, b.response("@ID@"), b.retrieve("@ID@")];
}

/** Runs wrk once: `pairs` threads, one connection each, for `seconds`. */
export async function wrkCycles(protocol: Protocol, s: CycleServer, pairs: number, seconds: number, workDir: string): Promise<CycleRun> {
  const file = join(workDir, `cycle-${protocol}-${s.role}-${pairs}-${crypto.randomUUID().slice(0, 8)}.tsv`);
  writeFileSync(file, (await cycleLines(protocol, s, pairs)).join("\n") + "\n");
  const proc = Bun.spawn(["wrk", "-t", String(pairs), "-c", String(pairs), "-d", `${seconds}s`, "--timeout", "10s", "-s", join(REPO, "bench/wrk/cycle.lua"), s.url], {
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", WRK_CYCLE_FILE: file, WRK_NODE_TOKEN: s.token },
    stdout: "pipe",
    stderr: "pipe",
  });
  const cpuBefore = processCpuUs(s.pid);
  const datastoreBefore = processCpuUs(s.datastorePid);
  const killer = setTimeout(() => proc.kill("SIGKILL"), (seconds + 30) * 1_000);
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(killer);
  const cpuUs = processCpuUs(s.pid) - cpuBefore;
  const datastoreCpuUs = processCpuUs(s.datastorePid) - datastoreBefore;
  const line = out.split("\n").find((l) => l.startsWith("WRK_CYCLES "));
  if (code !== 0 || !line) throw new Error(`wrk exited ${code} without a result (${protocol}, ${s.role}, ${pairs} pairs):\n${out}\n${err}`);
  const r = JSON.parse(line.slice("WRK_CYCLES ".length)) as { cycles: number; errors: number; durationUs: number; socketErrors: number; firstError: string; hist: string[] };
  return {
    protocol,
    pairs,
    role: s.role,
    cycles: r.cycles,
    cyclesPerSecond: r.durationUs > 0 ? (r.cycles * 1e6) / r.durationUs : 0,
    errors: r.errors,
    socketErrors: r.socketErrors,
    firstError: r.firstError,
    steps: r.hist.map(histogramPercentiles),
    durationS: r.durationUs / 1e6,
    hist: r.hist,
    cpuUs,
    datastoreCpuUs,
  };
}

/** Rounds of one protocol x pairs x server as one run: cycles over the summed time, buckets merged. */
export function mergeRuns(runs: CycleRun[]): CycleRun {
  const first = runs[0]!;
  const cycles = runs.reduce((t, r) => t + r.cycles, 0);
  const durationS = runs.reduce((t, r) => t + r.durationS, 0);
  const hist = first.hist.map((_, k) => runs.map((r) => r.hist[k] ?? "").filter(Boolean).join(","));
  return {
    ...first,
    cycles,
    durationS,
    cyclesPerSecond: durationS > 0 ? cycles / durationS : 0,
    errors: runs.reduce((t, r) => t + r.errors, 0),
    socketErrors: runs.reduce((t, r) => t + r.socketErrors, 0),
    firstError: runs.find((r) => r.firstError)?.firstError ?? "",
    cpuUs: runs.reduce((t, r) => t + r.cpuUs, 0),
    datastoreCpuUs: runs.reduce((t, r) => t + r.datastoreCpuUs, 0),
    hist,
    steps: hist.map(histogramPercentiles),
  };
}

export interface CyclesOptions {
  seconds: number;
  /** Each protocol x pairs x server runs this many times, interleaved with the others, then merged. */
  rounds: number;
  pairs: number[];
  protocols: Protocol[];
  log: (msg: string) => void;
}

/** Runs every protocol x pairs x server, servers rotating per run, and reports. */
export async function cyclesSection(servers: CycleServer[], o: CyclesOptions): Promise<SectionResult> {
  const workDir = mkdtempSync(join(tmpdir(), "tokenplace-bench-wrk-"));
  const rounds: CycleRun[] = [];
  const failures: string[] = [];
  let turn = 0;
  for (let round = 0; round < o.rounds; round++) {
    for (const protocol of o.protocols) {
      for (const pairs of o.pairs) {
        for (let k = 0; k < servers.length; k++) {
          const s = servers[(k + turn) % servers.length]!;
          o.log(`cycles: round ${round + 1}/${o.rounds}, ${protocol}, ${pairs} pair(s), ${ROLE_LABEL[s.role]}...`);
          try {
            const r = await wrkCycles(protocol, s, pairs, o.seconds, workDir);
            rounds.push(r);
            if (r.errors > 0 || r.cycles === 0) failures.push(`cycles ${protocol} ${pairs} pairs on ${ROLE_LABEL[s.role]}: ${r.errors} failed cycle(s), ${r.cycles} completed; first: ${r.firstError}`);
          } catch (err) {
            failures.push(`cycles ${protocol} ${pairs} pairs on ${ROLE_LABEL[s.role]}: ${err instanceof Error ? err.message : String(err)}`);
          }
        }
        turn++;
      }
    }
  }
  const runs: CycleRun[] = [];
  for (const protocol of o.protocols) {
    for (const pairs of o.pairs) {
      for (const s of servers) {
        const mine = rounds.filter((r) => r.protocol === protocol && r.pairs === pairs && r.role === s.role);
        if (mine.length > 0) runs.push(mergeRuns(mine));
      }
    }
  }
  return report(runs, servers, o, failures);
}

function report(runs: CycleRun[], servers: CycleServer[], o: CyclesOptions, failures: string[]): SectionResult {
  const find = (protocol: Protocol, pairs: number, role: ServerRole) => runs.find((r) => r.protocol === protocol && r.pairs === pairs && r.role === role);
  const targets: Target[] = [];
  const rows: string[][] = [];
  for (const protocol of o.protocols) {
    for (const pairs of o.pairs) {
      const ceiling = find(protocol, pairs, "ceiling");
      const upstream = find(protocol, pairs, "upstream");
      const memory = find(protocol, pairs, "memory");
      for (const s of servers) {
        const r = find(protocol, pairs, s.role);
        if (!r) continue;
        const vsCeiling = ceiling && s.role !== "ceiling" ? r.cyclesPerSecond / ceiling.cyclesPerSecond : NaN;
        const vsUpstream = upstream && s.role !== "upstream" ? r.cyclesPerSecond / upstream.cyclesPerSecond : NaN;
        const vsMemory = memory && s.role === "valkey" ? r.cyclesPerSecond / memory.cyclesPerSecond : NaN;
        const cpuPerCycle = r.cycles > 0 ? r.cpuUs / r.cycles : NaN;
        const datastorePerCycle = r.cycles > 0 ? r.datastoreCpuUs / r.cycles : NaN;
        rows.push([
          protocol === "v1" ? "API v1" : "legacy",
          String(pairs),
          ROLE_LABEL[s.role],
          rate(r.cyclesPerSecond, "cycles/s") + (r.errors ? ` (${r.errors} failed)` : ""),
          (Number.isFinite(cpuPerCycle) ? `${Math.round(cpuPerCycle)} µs` : "") + (Number.isFinite(datastorePerCycle) ? ` + Valkey ${Math.round(datastorePerCycle)} µs` : ""),
          Number.isFinite(vsCeiling) ? pctText(vsCeiling) : "",
          Number.isFinite(vsUpstream) ? ratioText(vsUpstream) : "",
          Number.isFinite(vsMemory) ? pctText(vsMemory) : "",
          ...r.steps.map((st) => `${msText(st.p50)} / ${msText(st.p99)}`),
        ]);
      }
      const label = `${protocol === "v1" ? "API v1" : "legacy"} cycles, ${pairs} pair(s)`;
      // The ceiling target is for the default settings (the memory store); Valkey's is its share of memory.
      if (memory && ceiling) {
        const v = memory.cyclesPerSecond / ceiling.cyclesPerSecond;
        targets.push({ what: `${label}: relay (memory) / ceiling`, figure: pctText(v), target: `>= ${pctText(CEILING_SHARE_TARGET)}`, met: v >= CEILING_SHARE_TARGET });
      }
      if (memory && upstream) {
        const v = memory.cyclesPerSecond / upstream.cyclesPerSecond;
        targets.push({ what: `${label}: relay (memory) / upstream relay.py`, figure: ratioText(v), target: `>= ${UPSTREAM_MULTIPLE_TARGET}x`, met: v >= UPSTREAM_MULTIPLE_TARGET });
      }
      const valkey = find(protocol, pairs, "valkey");
      if (memory && valkey) {
        const v = valkey.cyclesPerSecond / memory.cyclesPerSecond;
        targets.push({ what: `${label}: relay Valkey / memory`, figure: pctText(v), target: `>= ${pctText(VALKEY_SHARE_TARGET)}`, met: v >= VALKEY_SHARE_TARGET });
      }
    }
  }
  const stepHead = (p: Protocol) => STEP_NAMES[p].map((n) => `${n} p50 / p99`);
  const head = ["cycle", "pairs", "server", "cycles/s", "server CPU / cycle", "of ceiling", "x upstream", "Valkey / memory", ...(o.protocols.length === 1 ? stepHead(o.protocols[0]!) : ["step 1 p50 / p99", "step 2 p50 / p99", "step 3 p50 / p99", "step 4 p50 / p99"])];
  const body = [
    markdown(head, rows),
    "",
    `Steps: API v1 ${STEP_NAMES.v1.join(" → ")}; legacy ${STEP_NAMES.legacy.join(" → ")}. wrk, one connection per pair, ${o.rounds} round(s) of ${o.seconds} s per row, interleaved with the other servers' and merged. Server CPU / cycle: user and system time of the server's process (all threads) during its runs over the cycles completed; what a cycle costs it, which load from other processes slows less than it slows cycles/s; for the Valkey rows "+ Valkey" is the private redis-server's own CPU per cycle over the same runs. Everything shares this machine's cores with wrk: a row whose relay and datastore CPU per cycle together exceed what the cores can give at the memory store's rate cannot reach its share of it, whatever the relay does.`,

  ].join("\n");
  return { body, targets, failures, json: { seconds: o.seconds, rounds: o.rounds, runs: runs.map(({ hist: _hist, ...r }) => r) } };
}

