/**
 * `npm run bench:v1` (`bun run bench/v1.ts [--quick] [--rounds=N] [--samples=N] [--duration-ms=N]
 * [--concurrency=N] [--no-peers] [--no-upstream] [--source]`): the API v1 E2EE relay protocol,
 * measured in ONE run on this machine, printed as a markdown table.
 *
 * (a) Unmodified token.place peers (../shared/peers: server.py with its mock LLM + client.py),
 *     `--rounds` back-to-back round trips (default 6) through this relay and through upstream
 *     relay.py (started for the run, stopped after), medians side by side with their ratio.
 * (b) Wake latency of held polls: a fake node holds `servers/poll`, the client POSTs `requests`,
 *     time from that POST to the poll's answer; then the client holds `responses/retrieve`, the
 *     node POSTs `responses`, time from that POST to the retrieve's answer. Each sample is paired
 *     with one plain POST round trip to a minimal Bun.serve (bench/baseline-server.ts): the floor.
 * (c) Request-cycle rate: `--concurrency` fake node/client pairs each looping requests -> poll ->
 *     responses -> retrieve, cycles/s, against plain POSTs/s to the baseline at that concurrency.
 *
 * The relay is the compiled binary (dist/tokenplace-relay-linux-x64) when built, else src/main.ts
 * (`--source` forces that). `--quick` (bench smoke test) skips (a) and shortens (b) and (c).
 * Payloads are random base64 of real sizes: the relay never opens them. Exit 1 if any round,
 * sample or cycle failed.
 */
import { existsSync } from "node:fs";
import { distribution, mergeLoad, runLoad, type Distribution, type LoadResult } from "./load.ts";
import { peersProblems, RELAY_BIN, REPO, runTokenplaceE2E, startUpstreamRelay, type E2EResult, type UpstreamRelay } from "./peers.ts";
import { machineFacts, msText, rate } from "./report.ts";
import { fakeKey } from "./scenarios.ts";

// ------------------------------------------------------------------------------ options

function option(name: string, fallback: number): number {
  const arg = process.argv.find((a) => a.startsWith(`--${name}=`));
  if (!arg) return fallback;
  const n = Number(arg.slice(name.length + 3));
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got ${arg}`);
  return Math.floor(n);
}
const flag = (name: string) => process.argv.includes(`--${name}`);

const quick = flag("quick");
const opts = {
  quick,
  peers: flag("peers") || (!quick && !flag("no-peers")),
  upstream: !flag("no-upstream"),
  rounds: option("rounds", 6),
  samples: option("samples", quick ? 20 : 200),
  durationMs: option("duration-ms", quick ? 300 : 3_000),
  concurrency: option("concurrency", 8),
  cycleRounds: quick ? 1 : 2,
  warmupMs: quick ? 100 : 300,
  /** Lets a poll or retrieve reach the relay and be held before the event that wakes it. */
  settleMs: 5,
  source: flag("source") || !existsSync(RELAY_BIN),
};

const TOKEN = `bench-v1-${crypto.randomUUID()}`;
const NODE_AUTH = { "X-Relay-Server-Token": TOKEN };
const PROTOCOL = "tokenplace_api_v1_relay_e2ee";
const CAPABILITIES = {
  api_version: "v1",
  supported_model_ids: ["qwen3-8b-instruct"],
  active_context_tier: "8k-fast",
  maximum_total_context_tokens: 8192,
  default_output_token_reservation: 1024,
  maximum_output_tokens: 8192,
  max_concurrency: 1,
  backend_class: "cpu",
};

// ------------------------------------------------------------------------------ child servers

interface Child {
  url: string;
  port: number;
  output: string[];
  stop(): Promise<void>;
}

/** Spawns a server that logs a `"msg":"listening"` JSON line with its port; exact env, nothing inherited but PATH. */
async function spawnListening(cmd: string[], env: Record<string, string>): Promise<Child> {
  const proc = Bun.spawn(cmd, { cwd: REPO, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env }, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const output: string[] = [];
  let onPort!: (p: number) => void;
  const port = new Promise<number>((r) => (onPort = r));
  const pump = async (s: ReadableStream<Uint8Array>) => {
    const dec = new TextDecoder();
    let buf = "";
    try {
      for await (const chunk of s) {
        buf += dec.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (output.length < 200) output.push(line);
          if (line.includes('"listening"')) {
            try {
              const p = (JSON.parse(line) as { port?: unknown }).port;
              if (typeof p === "number") onPort(p);
            } catch {}
          }
        }
      }
    } catch {}
  };
  void pump(proc.stdout);
  void pump(proc.stderr);
  const stop = async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill("SIGTERM");
    const t = setTimeout(() => proc.kill("SIGKILL"), 3_000);
    await proc.exited;
    clearTimeout(t);
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const got = await Promise.race([
    port,
    proc.exited.then((c) => `exited with ${c}`),
    new Promise<string>((r) => (timer = setTimeout(() => r("no listening line within 15 s"), 15_000))),
  ]);
  clearTimeout(timer);
  if (typeof got === "string") {
    await stop();
    throw new Error(`${cmd.join(" ")} ${got}:\n${output.slice(-20).join("\n")}`);
  }
  return { url: `http://127.0.0.1:${got}`, port: got, output, stop };
}

// ------------------------------------------------------------------------------ HTTP

interface Answer {
  status: number;
  json: Record<string, unknown>;
  /** performance.now() when the answer was parsed (not when the caller got round to awaiting it). */
  at: number;
}

async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(20_000),
  });
  const json = (await res.json()) as Record<string, unknown>;
  return { status: res.status, json, at: performance.now() };
}

const b64 = (bytes: number) => Buffer.from(crypto.getRandomValues(new Uint8Array(bytes))).toString("base64");
const describe = (a: Answer) => `${a.status} ${JSON.stringify(a.json).slice(0, 200)}`;

/** A fake node: a registered key (its control credential is not needed for poll/responses). */
async function registerNode(relay: string): Promise<string> {
  const key = fakeKey();
  const r = await post(`${relay}/api/v1/relay/servers/register`, { server_public_key: key, capabilities: CAPABILITIES }, NODE_AUTH);
  if (r.status !== 200) throw new Error(`servers/register: ${describe(r)}`);
  return key;
}

/** What client.py sends to `requests` (spec §6.6), and what server.py sends to `responses` (§6.8). */
function v1Bodies(nodeKey: string, clientKey: string) {
  const ciphertext = b64(512);
  const cipherkey = b64(256);
  const iv = b64(16);
  const common = (request_id: string) => ({ client_public_key: clientKey, request_id, protocol: PROTOCOL, version: 1, chat_history: ciphertext, cipherkey, iv });
  return {
    request: (id: string) => JSON.stringify({ server_public_key: nodeKey, ...common(id) }),
    response: (id: string) => JSON.stringify(common(id)),
    poll: JSON.stringify({ server_public_key: nodeKey }),
    retrieve: (id: string) => JSON.stringify({ client_public_key: clientKey, request_id: id }),
  };
}

// ------------------------------------------------------------------------------ (b) wake latency

interface WakeResult {
  poll: Distribution;
  retrieve: Distribution;
  baselineRtt: Distribution;
  requestAck: Distribution;
  misses: number;
  firstMiss?: string;
}

async function wakeLatency(relay: string, baseline: string): Promise<WakeResult> {
  const node = await registerNode(relay);
  const body = v1Bodies(node, fakeKey());
  const plain = JSON.stringify({ chat_history: b64(512) });
  const polls: number[] = [];
  const retrieves: number[] = [];
  const rtts: number[] = [];
  const acks: number[] = [];
  let misses = 0;
  let firstMiss: string | undefined;
  const miss = (what: string) => {
    misses++;
    firstMiss ??= what;
  };
  for (let i = 0; i < opts.samples; i++) {
    const b0 = performance.now();
    const p = await post(`${baseline}/plain`, plain);
    if (p.status !== 200) throw new Error(`baseline answered ${p.status}`);
    rtts.push(p.at - b0);

    const id = `bench-v1-${i}-${crypto.randomUUID()}`;
    const held = post(`${relay}/api/v1/relay/servers/poll`, body.poll, NODE_AUTH);
    held.catch(() => {});
    await Bun.sleep(opts.settleMs);
    const t0 = performance.now();
    const admitted = await post(`${relay}/api/v1/relay/requests`, body.request(id));
    if (admitted.status !== 200) throw new Error(`requests: ${describe(admitted)}`);
    acks.push(admitted.at - t0);
    const work = await held;
    if (work.status === 200 && work.json.request_id === id) polls.push(work.at - t0);
    else miss(`servers/poll gave ${describe(work)}`);

    const waiting = post(`${relay}/api/v1/relay/responses/retrieve`, body.retrieve(id));
    waiting.catch(() => {});
    await Bun.sleep(opts.settleMs);
    const t1 = performance.now();
    const answered = await post(`${relay}/api/v1/relay/responses`, body.response(id), NODE_AUTH);
    if (answered.status !== 200) throw new Error(`responses: ${describe(answered)}`);
    const got = await waiting;
    if (got.status === 200 && got.json.request_id === id) retrieves.push(got.at - t1);
    else miss(`responses/retrieve gave ${describe(got)}`);
  }
  const out: WakeResult = { poll: distribution(polls), retrieve: distribution(retrieves), baselineRtt: distribution(rtts), requestAck: distribution(acks), misses };
  if (firstMiss !== undefined) out.firstMiss = firstMiss;
  return out;
}

// ------------------------------------------------------------------------------ (c) cycle rate

async function cycleRate(relay: string, baseline: string) {
  const workers = await Promise.all(
    Array.from({ length: opts.concurrency }, async () => v1Bodies(await registerNode(relay), fakeKey())),
  );
  let seq = 0;
  const cycle = async (w: number) => {
    const b = workers[w]!;
    const id = `bench-v1-cycle-${w}-${++seq}`;
    const q = await post(`${relay}/api/v1/relay/requests`, b.request(id));
    if (q.status !== 200) throw new Error(`requests: ${describe(q)}`);
    const work = await post(`${relay}/api/v1/relay/servers/poll`, b.poll, NODE_AUTH);
    if (work.status !== 200 || work.json.request_id !== id) throw new Error(`servers/poll: ${describe(work)}`);
    const r = await post(`${relay}/api/v1/relay/responses`, b.response(id), NODE_AUTH);
    if (r.status !== 200) throw new Error(`responses: ${describe(r)}`);
    const got = await post(`${relay}/api/v1/relay/responses/retrieve`, b.retrieve(id));
    return got.status === 200 && got.json.request_id === id;
  };
  const plain = JSON.stringify({ chat_history: b64(512) });
  const basePost = async () => (await post(`${baseline}/plain`, plain)).status === 200;
  const load = (iteration: (w: number) => Promise<boolean>, durationMs: number) =>
    runLoad({ concurrency: opts.concurrency, durationMs, maxIterations: 10_000_000, iteration });

  await load(cycle, opts.warmupMs); // JIT and connection pool warm-up
  await load(basePost, opts.warmupMs);
  const roundMs = Math.max(100, Math.floor(opts.durationMs / opts.cycleRounds));
  const cycles: LoadResult[] = [];
  const base: LoadResult[] = [];
  for (let r = 0; r < opts.cycleRounds; r++) {
    // Interleaved, so machine drift hits both.
    cycles.push(await load(cycle, roundMs));
    base.push(await load(basePost, roundMs));
  }
  return { cycles: mergeLoad(cycles), baseline: mergeLoad(base) };
}

// ------------------------------------------------------------------------------ report

const sec = (s: number) => (Number.isFinite(s) ? `${s.toFixed(3)} s` : "n/a");
const x = (r: number) => (Number.isFinite(r) && r > 0 ? `${r < 0.1 ? r.toFixed(4) : r.toFixed(2)}x` : "n/a");

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
let relay: Child | undefined;
let baseline: Child | undefined;
const stopAll = () => Promise.all([upstream?.stop(), relay?.stop(), baseline?.stop()]);
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    void stopAll().finally(() => process.exit(130));
  });
}

async function main(): Promise<number> {
  const facts = machineFacts();
  const relayCmd = opts.source ? [process.execPath, "run", "src/main.ts"] : [RELAY_BIN];
  console.log(`tokenplace-relay API v1 benchmark${quick ? " (quick)" : ""}`);
  console.log(Object.entries(facts).map(([k, v]) => `${k}: ${v}`).join(" | "));
  console.log(`relay: ${opts.source ? "bun run src/main.ts" : "dist/tokenplace-relay-linux-x64 (compiled)"}; loopback only; ` +
    `${opts.samples} wake samples; ${opts.concurrency} concurrent node/client pairs for ${opts.durationMs} ms\n`);

  const failures: string[] = [];
  const rows: string[][] = [];
  const json: Record<string, unknown> = { facts, params: opts };
  try {
    [relay, baseline] = await Promise.all([
      spawnListening(relayCmd, { RELAY_PORT: "0", RELAY_HOST: "127.0.0.1", TOKENPLACE_RELAY_ONLY: "true", LOG_LEVEL: "warn", TOKEN_PLACE_RELAY_SERVER_TOKEN: TOKEN }),
      spawnListening([process.execPath, "run", "bench/baseline-server.ts"], {}),
    ]);

    // (a) the real peers, ours then upstream's relay (each with its own fresh node).
    if (opts.peers) {
      const problems = peersProblems();
      if (problems.length > 0) {
        console.log(`SKIPPED peers part: ${problems.join("; ")}`);
      } else {
        console.error(`peers: ${opts.rounds} back-to-back round trips through tokenplace-relay...`);
        const ours = await runTokenplaceE2E(relay.port, opts.rounds, TOKEN);
        if (ours.code !== 0) failures.push(`peers through tokenplace-relay: ${ours.summary}\n${ours.stderr.slice(-1500)}`);
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
        const ratio = theirs ? ours.medianS / theirs.medianS : NaN;
        rows.push([
          `unmodified server.py + client.py, ${opts.rounds} back-to-back round trips: median`,
          e2eCell(ours),
          theirs ? `upstream relay.py: ${e2eCell(theirs)}` : "upstream relay.py: not run",
          theirs ? `${x(ratio)} (${(1 / ratio).toFixed(0)}x faster)` : "",
        ]);
        rows.push([
          "  per round",
          ours.roundSeconds.map((s) => s.toFixed(2)).join(", ") + " s",
          theirs ? `upstream: ${theirs.roundSeconds.map((s) => s.toFixed(2)).join(", ")} s` : "",
          "",
        ]);
        json.peers = { ours: { ok: ours.ok, rounds: ours.rounds, medianS: ours.medianS, roundSeconds: ours.roundSeconds }, upstream: theirs && { ok: theirs.ok, rounds: theirs.rounds, medianS: theirs.medianS, roundSeconds: theirs.roundSeconds } };
      }
    }

    // (b) wake latency of the two held polls.
    const wake = await wakeLatency(relay.url, baseline.url);
    if (wake.misses > 0) failures.push(`${wake.misses} wake sample(s) missed, first: ${wake.firstMiss}`);
    const rtt = wake.baselineRtt;
    for (const [label, d] of [["held servers/poll woken by POST requests", wake.poll], ["held responses/retrieve woken by POST responses", wake.retrieve]] as const) {
      for (const q of ["p50", "p99"] as const) {
        rows.push([`${label}: ${q} (${d.count} samples)`, msText(d[q]), `plain POST RTT ${q}: ${msText(rtt[q])}`, x(d[q] / rtt[q])]);
      }
      rows.push([`  max`, msText(d.max), `plain POST RTT max: ${msText(rtt.max)}`, ""]);
    }
    rows.push([`POST requests acknowledged (p50)`, msText(wake.requestAck.p50), `plain POST RTT p50: ${msText(rtt.p50)}`, x(wake.requestAck.p50 / rtt.p50)]);
    json.wakeMs = { poll: wake.poll, retrieve: wake.retrieve, requestAck: wake.requestAck, baselineRtt: rtt, misses: wake.misses };

    // (c) full request cycles.
    const c = await cycleRate(relay.url, baseline.url);
    if (c.cycles.failed > 0) failures.push(`${c.cycles.failed} request cycle(s) failed, first: ${c.cycles.firstError}`);
    rows.push([
      `requests -> poll -> responses -> retrieve cycles, ${opts.concurrency} pairs`,
      rate(c.cycles.perSecond, "cycles/s"),
      "",
      "",
    ]);
    rows.push([
      `  as HTTP requests/s (4 per cycle) vs plain POST`,
      rate(c.cycles.perSecond * 4, "req/s"),
      `plain POST: ${rate(c.baseline.perSecond, "req/s")}`,
      x((c.cycles.perSecond * 4) / c.baseline.perSecond),
    ]);
    json.cycles = { perSecond: Math.round(c.cycles.perSecond), completed: c.cycles.completed, failed: c.cycles.failed, baselinePostsPerSecond: Math.round(c.baseline.perSecond) };

    console.log(markdown(["measure", "tokenplace-relay", "reference (same run)", "ratio relay/reference"], rows));
    console.log(
      `\nratios: < 1 is faster than the reference for latencies, > 1 is more per second for rates. ` +
        `The peers' rounds include client.py's crypto and, for upstream, server.py's 30 s lease sleep after each job.`,
    );
    for (const f of failures) console.log(`FAILED: ${f}`);
    json.failures = failures.length;
    console.log(`BENCH_V1_JSON ${JSON.stringify(json)}`);
    return failures.length > 0 ? 1 : 0;
  } catch (err) {
    console.error(`bench:v1 failed: ${err instanceof Error ? err.message : String(err)}`);
    if (relay) console.error(`relay output (last lines):\n${relay.output.slice(-10).join("\n")}`);
    return 1;
  } finally {
    await stopAll();
  }
}

process.exitCode = await main();
