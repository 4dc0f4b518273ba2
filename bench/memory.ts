/**
 * Section "memory" of `npm run bench`: resident set size (VmRSS, /proc) of the compiled relay
 * binary idle (2 s after start, and again at twice the settle time), with 10,000 held
 * `servers/poll`, after they close, with 10,000 open proxied SSE streams, and after those close;
 * a bare compiled `Bun.serve` idle beside it.
 *
 * One relay process in proxy mode (so it can proxy the streams) with the API v1 routes. All
 * requests come from 127.0.0.1, so the caps that would refuse one address 10,000 holds are raised
 * for this run (documented in docs/demo-and-bench.md): RELAY_MAX_HOLDS_PER_IP=0 (no per-address
 * cap), RELAY_MAX_LONG_POLLS and RELAY_MAX_NODES above 10,000, RELAY_MAX_CONNECTIONS above the
 * sockets, BUN_CONFIG_MAX_HTTP_REQUESTS above the streams, and the poll held for the longest
 * allowed wait (TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS=120) so no hold ends while measured.
 *
 * Holds: 10,000 nodes register (registration token, as the peers), each then holds one poll over
 * its own raw socket; the relay's long_polls_waiting gauge confirms all are held before RSS is
 * read. They close by the client dropping the socket; then the nodes unregister (as a node
 * leaving does) and the relay gets `settleMs` to collect its garbage and hand memory back before
 * "after" is read (on this machine 3 s was not enough, 15 s was: the runtime returns it lazily).
 * Streams: 10,000 raw-socket GETs of an SSE stream through the relay (one event every 10 s,
 * the first at once); all have had their first event before RSS is read.
 *
 * Beside the relay, the same streams through the least a Bun proxy can be (the bare binary in
 * proxy mode, bench/baseline-server.ts): once with fetch's body handed to the response (a native
 * pipe) and once read chunk by chunk into a direct stream (the relay's way): the per-stream cost
 * that is Bun's, not the relay's. And the same holds on the bare binary (its `POST /hold`, opened
 * by the same raw-socket helper in the same batches): what Bun keeps per held request. The bare
 * server and both proxies are read again `settleMs` after their load closed, as the relay is, so
 * the report can say how much of the relay's growth after load is the runtime's own retention. Every RSS is split into anonymous memory and file-backed pages
 * (the binary's code and embedded module graph, mapped from the file: shared between processes
 * of one binary and reclaimable), from /proc/<pid>/smaps_rollup, and the anonymous part's JIT code
 * (anonymous executable mappings, /proc/<pid>/smaps) is shown beside it.
 *
 * The file-backed pages depend on the page-cache state of the binary file as much as on what runs:
 * a file just written (a fresh build, an image layer just pulled) is mapped in larger pieces per
 * fault than one read back from disk, ~5 MiB more RSS for the relay. So with `cold` the idle RSS
 * is also read from copies of the binaries dropped from the page cache before they start.
 */
import { heldOn } from "./state.ts";
import { openSse, type OpenStream } from "./sse-client.ts";
import { describe, post } from "./v1-wake.ts";
import { fakeKey } from "./scenarios.ts";
import { NODE_CAPABILITIES } from "../src/demo/protocol.ts";
import { markdown, mib, type SectionResult, type Target } from "./report.ts";
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { rssBytes, spawnListening, type Server } from "./child.ts";

/** Anonymous bytes of a process (heap, stacks, JIT code); the rest of its RSS is file-backed. */
export function anonBytes(pid: number): number {
  const m = /^Anonymous:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
  return m ? Number(m[1]) * 1024 : NaN;
}

/**
 * Resident bytes of anonymous executable mappings: the code JavaScriptCore's JIT tiers (baseline,
 * DFG, FTL) and its regular expression compiler generated. Part of anonBytes.
 */
export function jitCodeBytes(pid: number): number {
  let total = 0;
  let executableAnon = false;
  for (const line of readFileSync(`/proc/${pid}/smaps`, "utf8").split("\n")) {
    const head = /^[0-9a-f]+-[0-9a-f]+ (\S{4}) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) executableAnon = head[1]!.includes("x") && (head[2] === "" || head[2]!.startsWith("[anon"));
    else if (executableAnon && line.startsWith("Rss:")) total += Number(/(\d+)/.exec(line)![1]) * 1024;
  }
  return total;
}

/** A server and its RSS split, read at once. */
const resident = (pid: number) => ({ rss: rssBytes(pid), anon: anonBytes(pid), jit: jitCodeBytes(pid) });
type Resident = ReturnType<typeof resident>;

/** The minimal Bun proxies measured beside the relay (bench/baseline-server.ts in proxy mode). */
export interface ProxyFloor {
  label: string;
  server: Server;
}

export const IDLE_TARGET_BYTES = 40 * 2 ** 20;
export const LOADED_TARGET_BYTES = 200 * 2 ** 20;
export const AFTER_TARGET_RATIO = 1.1;
/** A fresh process has finished starting well within this. */
const IDLE_SETTLE_MS = 2_000;
/**
 * After a bare server's forced collection (bench/baseline-server.ts, `POST /collect`), before its
 * RSS is read: the allocator returns freed pages shortly after, not during, the collection.
 */
const COLLECT_SETTLE_MS = 1_000;
/** When the relay's idle RSS is read a second time: twice the settle time (30 s by default). */
export const lateIdleMs = (settleMs: number) => Math.max(IDLE_SETTLE_MS, 2 * settleMs);

/** What the relay of this section needs beyond its defaults (see the module comment). */
export function memoryRelayEnv(holds: number): Record<string, string> {
  return {
    RELAY_MAX_HOLDS_PER_IP: "0",
    RELAY_MAX_LONG_POLLS: String(holds * 2),
    RELAY_MAX_NODES: String(holds * 2),
    RELAY_MAX_CONNECTIONS: String(holds * 4),
    BUN_CONFIG_MAX_HTTP_REQUESTS: String(holds * 2),
    TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS: "120",
  };
}

/** A binary to start read cold from disk, with its exact environment (its port 0: it logs a listening line). */
export interface ColdStart {
  bin: string;
  env: Record<string, string>;
}

/**
 * Idle RSS of a copy of `c.bin` read cold from disk: the copy is flushed and dropped from the page
 * cache (`dd iflag=nocache count=0`, POSIX_FADV_DONTNEED) before it starts. Undefined (and why, in
 * `failures`) where that cannot be done.
 */
async function coldIdle(c: ColdStart, failures: string[]): Promise<Resident | undefined> {
  const dir = mkdtempSync(join(tmpdir(), "relay-cold-"));
  try {
    const copy = join(dir, basename(c.bin));
    copyFileSync(c.bin, copy);
    for (const cmd of [["sync", copy], ["dd", `if=${copy}`, "iflag=nocache", "count=0"]]) {
      const r = Bun.spawnSync(cmd, { stdout: "ignore", stderr: "pipe" });
      if (r.exitCode !== 0) {
        failures.push(`memory: cold start of ${basename(c.bin)}: ${cmd[0]} failed: ${r.stderr.toString().trim().slice(0, 200)}`);
        return undefined;
      }
    }
    const child = await spawnListening([copy], c.env);
    try {
      await Bun.sleep(IDLE_SETTLE_MS);
      return resident(child.pid);
    } finally {
      await child.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface MemoryOptions {
  holds: number;
  streams: number;
  settleMs: number;
  token: string;
  log: (msg: string) => void;
  /** Minimal proxies to open the same streams through, after the relay. */
  floors?: ProxyFloor[];
  /** The relay (and the bare binary) also idle from a copy read cold from disk (see coldIdle). */
  cold?: { relay: ColdStart; bare?: ColdStart };
}

const rawPoll = (port: number, key: string, token: string) => {
  const body = JSON.stringify({ server_public_key: key });
  return `POST /api/v1/relay/servers/poll HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\nX-Relay-Server-Token: ${token}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
};

/** The bare server's held request (bench/baseline-server.ts): the relay's poll body, path /hold. */
const rawBareHold = (port: number, key: string) => {
  const body = JSON.stringify({ server_public_key: key });
  return `POST /hold HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
};

/** Holds one request (`requests[i]`) open per socket; close() drops them all. */
async function holdRequests(port: number, requests: string[]): Promise<{ close(): void; answered: () => number }> {
  const sockets: { end(): void }[] = [];
  let answered = 0;
  const BATCH = 500; // connects in batches: the listen backlog is finite
  for (let i = 0; i < requests.length; i += BATCH) {
    await Promise.all(
      requests.slice(i, i + BATCH).map((request) =>
        Bun.connect({
          hostname: "127.0.0.1",
          port,
          socket: {
            open(s) {
              sockets.push(s);
              s.write(request);
            },
            data() {
              answered++; // a hold that ended early (counted, it would be a bench error)
            },
          },
        }),
      ),
    );
  }
  return { close: () => sockets.forEach((s) => s.end()), answered: () => answered };
}

/** A bare server's memory after a forced full collection (as the relay's memory guard runs one after load). */
async function collected(server: Server): Promise<Resident> {
  const r = await fetch(`${server.url}/collect`, { method: "POST" });
  if (r.status !== 200) throw new Error(`memory: POST /collect on ${server.url}: ${r.status}`);
  await Bun.sleep(COLLECT_SETTLE_MS);
  return resident(server.pid);
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await check()) return;
    await Bun.sleep(100);
  }
  throw new Error(`memory: ${what} within ${timeoutMs} ms`);
}

/** Opens `n` SSE streams through `port`, reads `pid`'s memory with all of them open, closes them. */
async function holdStreams(pid: number, port: number, n: number, failures: string[], who: string): Promise<Resident | undefined> {
  const streams: OpenStream[] = [];
  const BATCH = 500;
  try {
    for (let i = 0; i < n; i += BATCH) {
      const batch = Array.from({ length: Math.min(BATCH, n - i) }, () => openSse(port, "/api/sse?n=1000&gap=10000", 0, 600_000));
      streams.push(...batch);
      await Promise.all(batch.map((s) => s.first));
    }
    const broken = (await Promise.all(streams.map((s) => Promise.race([s.done.then((r) => r.error ?? `ended (status ${r.status})`), Bun.sleep(0).then(() => undefined)])))).filter((e) => e !== undefined);
    if (broken.length > 0) {
      failures.push(`memory: ${broken.length} stream(s) through ${who} ended before they were measured, first: ${broken[0]}`);
      return undefined;
    }
    return resident(pid);
  } finally {
    streams.forEach((s) => s.close());
    await Promise.all(streams.map((s) => s.done));
  }
}

const growthText = (after: number | undefined, base: number | undefined) =>
  after === undefined || base === undefined ? "n/a" : `${(after / base).toFixed(2)}x its idle (+${mib(after - base)})`;
/** A bare server's growth after its load, and after a full collection on top where it was read. */
const bareGrowthText = (after: number | undefined, collectedAfter: number | undefined, base: number | undefined) =>
  growthText(after, base) + (collectedAfter === undefined || base === undefined ? "" : ` or ${(collectedAfter / base).toFixed(2)}x (+${mib(collectedAfter - base)}) after a full collection`);

/**
 * The sentence that sets the relay's growth after load beside a bare Bun server's after the same
 * load (same holds, same streams, same settle time; the bare servers also after a full collection,
 * which the relay's memory guard runs by itself once load has passed): how much of the relay's
 * after-load target is out of reach for the runtime alone. Empty where neither was measured.
 */
export function runtimeShare(figures: Record<string, number>, floors: ProxyFloor[], settleMs: number): string {
  const parts: string[] = [];
  if (figures.bareAfterHolds !== undefined)
    parts.push(`after the same holds a bare compiled Bun.serve keeps ${bareGrowthText(figures.bareAfterHolds, figures.bareCollected, figures.bareIdle)}, the relay ${growthText(figures.afterHolds, figures.idle)}`);
  const proxies = floors.flatMap((f, i) =>
    figures[`floor${i}After`] === undefined ? [] : [`the minimal Bun proxy (${f.label}) ${bareGrowthText(figures[`floor${i}After`], figures[`floor${i}Collected`], figures[`floor${i}Idle`])}`],
  );
  if (proxies.length > 0) {
    // The relay's streams start from what its holds left, the proxies' from their idle.
    const since = figures.afterStreams === undefined || figures.afterHolds === undefined ? "" : `, +${mib(figures.afterStreams - figures.afterHolds)} over what its holds left`;
    parts.push(`after the same streams ${proxies.join(", ")}, the relay ${growthText(figures.afterStreams, figures.idle)}${since}`);
  }
  return parts.length === 0 ? "" : `What the runtime itself keeps after load (+${settleMs / 1000} s): ${parts.join("; ")}.`;
}

/** Runs the section on `relay` (proxy mode, memoryRelayEnv) with `bareIdleBytes` measured beside it. */
export async function memorySection(relay: Server, bare: Server | undefined, o: MemoryOptions): Promise<SectionResult> {
  const started = performance.now();
  const failures: string[] = [];
  const figures: Record<string, number> = {};
  const anon: Record<string, number> = {};
  const jit: Record<string, number> = {};
  const put = (name: string, r: Resident | undefined) => {
    if (!r) return;
    figures[name] = r.rss;
    anon[name] = r.anon;
    jit[name] = r.jit;
  };
  const auth = { "X-Relay-Server-Token": o.token };
  await Bun.sleep(IDLE_SETTLE_MS);
  put("idle", resident(relay.pid));
  const idle = figures.idle!;
  if (bare) put("bareIdle", resident(bare.pid));
  if (o.cold) {
    put("coldIdle", await coldIdle(o.cold.relay, failures));
    if (o.cold.bare) put("bareColdIdle", await coldIdle(o.cold.bare, failures));
  }
  // Idle once more, later: an idle relay's timers run often enough for the optimizing JIT to
  // compile them after some seconds, which pages in the compiler (docs/demo-and-bench.md).
  const lateMs = lateIdleMs(o.settleMs);
  await Bun.sleep(Math.max(0, lateMs - (performance.now() - started)));
  put("idleLate", resident(relay.pid));

  // held polls
  o.log(`memory: registering ${o.holds} nodes...`);
  const creds: [string, string][] = [];
  const WORKERS = 32;
  let next = 0;
  await Promise.all(
    Array.from({ length: WORKERS }, async () => {
      while (next < o.holds) {
        next++;
        const key = fakeKey();
        const r = await post(`${relay.url}/api/v1/relay/servers/register`, { server_public_key: key, capabilities: NODE_CAPABILITIES }, auth);
        if (r.status !== 200 || typeof r.json.control_credential !== "string") throw new Error(`memory: servers/register: ${describe(r)}`);
        creds.push([key, r.json.control_credential]);
      }
    }),
  );
  o.log(`memory: holding ${o.holds} polls...`);
  const before = await heldOn(relay.url, "servers/poll");
  const held = await holdRequests(relay.port, creds.map(([k]) => rawPoll(relay.port, k, o.token)));
  try {
    await waitFor(`${o.holds} polls held`, async () => (await heldOn(relay.url, "servers/poll")) - before >= o.holds, 60_000);
    put("holds", resident(relay.pid));
    if (held.answered() > 0) failures.push(`memory: ${held.answered()} held poll(s) answered before they were closed`);
  } catch (err) {
    failures.push(err instanceof Error ? err.message : String(err));
  } finally {
    held.close();
  }
  await waitFor("held polls released", async () => (await heldOn(relay.url, "servers/poll")) <= before, 60_000).catch((e: Error) => failures.push(e.message));
  o.log("memory: nodes leaving...");
  next = 0;
  await Promise.all(
    Array.from({ length: WORKERS }, async () => {
      while (next < creds.length) {
        const [key, credential] = creds[next++]!;
        const r = await post(`${relay.url}/api/v1/relay/servers/unregister`, { server_public_key: key, control_credential: credential }, auth);
        if (r.status !== 200) throw new Error(`memory: servers/unregister: ${describe(r)}`);
      }
    }),
  );
  await Bun.sleep(o.settleMs);
  put("afterHolds", resident(relay.pid));

  // proxied streams
  o.log(`memory: opening ${o.streams} proxied streams...`);
  put("streams", await holdStreams(relay.pid, relay.port, o.streams, failures, "the relay"));
  await Bun.sleep(o.settleMs);
  put("afterStreams", resident(relay.pid));

  // the same streams through the minimal proxies
  for (const [i, f] of (o.floors ?? []).entries()) {
    o.log(`memory: opening ${o.streams} streams through the minimal proxy (${f.label})...`);
    put(`floor${i}Idle`, resident(f.server.pid));
    put(`floor${i}Streams`, await holdStreams(f.server.pid, f.server.port, o.streams, failures, `the minimal proxy (${f.label})`));
    await Bun.sleep(o.settleMs);
    put(`floor${i}After`, resident(f.server.pid));
    put(`floor${i}Collected`, await collected(f.server));
  }

  // the same holds on the bare server
  if (bare) {
    o.log(`memory: holding ${o.holds} requests on the bare Bun.serve...`);
    const bareHeld = async () => ((await (await fetch(`${bare.url}/held`)).json()) as { held: number }).held;
    const keys = Array.from({ length: o.holds }, () => fakeKey());
    const held = await holdRequests(bare.port, keys.map((k) => rawBareHold(bare.port, k)));
    try {
      await waitFor(`${o.holds} requests held on the bare server`, async () => (await bareHeld()) >= o.holds, 60_000);
      put("bareHolds", resident(bare.pid));
      if (held.answered() > 0) failures.push(`memory: ${held.answered()} held request(s) on the bare server answered before they were closed`);
    } catch (err) {
      failures.push(err instanceof Error ? err.message : String(err));
    } finally {
      held.close();
    }
    await waitFor("held requests on the bare server released", async () => (await bareHeld()) === 0, 60_000).catch((e: Error) => failures.push(e.message));
    await Bun.sleep(o.settleMs);
    put("bareAfterHolds", resident(bare.pid));
    put("bareCollected", await collected(bare));
  }

  const targets: Target[] = [
    { what: "RSS idle (compiled relay)", figure: mib(idle), target: `<= ${mib(IDLE_TARGET_BYTES)}`, met: idle <= IDLE_TARGET_BYTES },
    { what: `RSS with ${o.holds.toLocaleString("en-US")} held polls`, figure: mib(figures.holds ?? NaN), target: `<= ${mib(LOADED_TARGET_BYTES)}`, met: figures.holds === undefined ? undefined : figures.holds <= LOADED_TARGET_BYTES },
    { what: "RSS after the holds closed (nodes left)", figure: mib(figures.afterHolds ?? NaN), target: `<= idle + 10 % (${mib(idle * AFTER_TARGET_RATIO)})`, met: (figures.afterHolds ?? Infinity) <= idle * AFTER_TARGET_RATIO },
    { what: `RSS with ${o.streams.toLocaleString("en-US")} open proxied streams`, figure: mib(figures.streams ?? NaN), target: `<= ${mib(LOADED_TARGET_BYTES)}`, met: figures.streams === undefined ? undefined : figures.streams <= LOADED_TARGET_BYTES },
    { what: "RSS after the streams closed", figure: mib(figures.afterStreams ?? NaN), target: `<= idle + 10 % (${mib(idle * AFTER_TARGET_RATIO)})`, met: (figures.afterStreams ?? Infinity) <= idle * AFTER_TARGET_RATIO },
  ];
  const perStream = (loaded: string, base: string) =>
    figures[loaded] === undefined || figures[base] === undefined ? "" : `${((figures[loaded]! - figures[base]!) / o.streams / 1024).toFixed(1)} KiB per stream`;
  /** figures[key] over figures[base] (the relay's idle unless told), NaN where one is missing. */
  const times = (key: string, base = "idle") => (figures[key] ?? NaN) / (figures[base] ?? NaN);
  const timesText = (key: string, base = "idle", of = "idle") => (Number.isFinite(times(key, base)) ? `${times(key, base).toFixed(2)}x ${of}` : "");
  const row = (what: string, key: string, note = "") => {
    const v = figures[key];
    const a = anon[key];
    const j = jit[key];
    return [
      what,
      v === undefined ? "n/a" : mib(v),
      a === undefined || Number.isNaN(a) || v === undefined ? "n/a" : `${mib(a)} (${j === undefined ? "n/a" : mib(j)}) / ${mib(v - a)}`,
      note || (v === undefined || key.startsWith("bare") || key.startsWith("floor") ? "" : timesText(key)),
    ];
  };
  const streamsLabel = o.streams.toLocaleString("en-US");
  const body = [
    markdown(
      ["state", "RSS", "anonymous (of it JIT code) / file-backed", "vs idle"],
      [
        row("bare compiled Bun.serve, idle", "bareIdle"),
        row("relay idle (proxy mode, fresh start)", "idle"),
        row(`relay still idle, ${lateIdleMs(o.settleMs) / 1000} s after start`, "idleLate"),
        ...(o.cold ? [row("bare compiled Bun.serve, idle, read cold from disk", "bareColdIdle"), row("relay idle, read cold from disk", "coldIdle")] : []),
        row(`relay with ${o.holds.toLocaleString("en-US")} held servers/poll`, "holds"),
        row(`relay after they closed and the nodes left (+${o.settleMs / 1000} s)`, "afterHolds"),
        ...(bare
          ? [
              row(`bare compiled Bun.serve with ${o.holds.toLocaleString("en-US")} held requests`, "bareHolds", timesText("bareHolds", "bareIdle", "its idle")),
              row(`bare compiled Bun.serve after they closed (+${o.settleMs / 1000} s)`, "bareAfterHolds", timesText("bareAfterHolds", "bareIdle", "its idle")),
              row("bare compiled Bun.serve after that and a full collection", "bareCollected", timesText("bareCollected", "bareIdle", "its idle")),
            ]
          : []),
        row(`relay with ${streamsLabel} open proxied SSE streams`, "streams", `${(figures.streams === undefined ? NaN : figures.streams / idle).toFixed(2)}x idle; ${perStream("streams", "afterHolds")}`),
        row(`relay after they closed (+${o.settleMs / 1000} s)`, "afterStreams"),
        ...(o.floors ?? []).flatMap((f, i) => [
          row(`minimal Bun proxy (${f.label}), idle`, `floor${i}Idle`),
          row(`minimal Bun proxy (${f.label}) with ${streamsLabel} open streams`, `floor${i}Streams`, perStream(`floor${i}Streams`, `floor${i}Idle`)),
          row(`minimal Bun proxy (${f.label}) after they closed (+${o.settleMs / 1000} s)`, `floor${i}After`, timesText(`floor${i}After`, `floor${i}Idle`, "its idle")),
          row(`minimal Bun proxy (${f.label}) after that and a full collection`, `floor${i}Collected`, timesText(`floor${i}Collected`, `floor${i}Idle`, "its idle")),
        ]),
      ],
    ),
    runtimeShare(figures, o.floors ?? [], o.settleMs),
  ]
    .filter((part) => part !== "")
    .join("\n\n");
  return { body, targets, failures, json: { holds: o.holds, streams: o.streams, settleMs: o.settleMs, rssBytes: figures, anonBytes: anon, jitCodeBytes: jit } };
}
