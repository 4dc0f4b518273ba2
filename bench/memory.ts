/**
 * Section "memory" of `npm run bench`: resident set size (VmRSS, /proc) of the compiled relay
 * binary idle, with 10,000 held `servers/poll`, after they close, with 10,000 open proxied SSE
 * streams, and after those close; a bare compiled `Bun.serve` idle beside it.
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
 */
import { heldOn } from "./state.ts";
import { openSse, type OpenStream } from "./sse-client.ts";
import { describe, post } from "./v1-wake.ts";
import { fakeKey } from "./scenarios.ts";
import { NODE_CAPABILITIES } from "../src/demo/protocol.ts";
import { markdown, mib, type SectionResult, type Target } from "./report.ts";
import { rssBytes, type Server } from "./child.ts";

export const IDLE_TARGET_BYTES = 40 * 2 ** 20;
export const LOADED_TARGET_BYTES = 200 * 2 ** 20;
export const AFTER_TARGET_RATIO = 1.1;
/** A fresh process has finished starting well within this. */
const IDLE_SETTLE_MS = 2_000;

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

export interface MemoryOptions {
  holds: number;
  streams: number;
  settleMs: number;
  token: string;
  log: (msg: string) => void;
}

const rawPoll = (port: number, key: string, token: string) => {
  const body = JSON.stringify({ server_public_key: key });
  return `POST /api/v1/relay/servers/poll HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\nX-Relay-Server-Token: ${token}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
};

/** Holds one request open per socket; close() drops them all. */
async function holdPolls(port: number, keys: string[], token: string): Promise<{ close(): void; answered: () => number }> {
  const sockets: { end(): void }[] = [];
  let answered = 0;
  const BATCH = 500; // connects in batches: the listen backlog is finite
  for (let i = 0; i < keys.length; i += BATCH) {
    await Promise.all(
      keys.slice(i, i + BATCH).map((k) =>
        Bun.connect({
          hostname: "127.0.0.1",
          port,
          socket: {
            open(s) {
              sockets.push(s);
              s.write(rawPoll(port, k, token));
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

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await check()) return;
    await Bun.sleep(100);
  }
  throw new Error(`memory: ${what} within ${timeoutMs} ms`);
}

/** Runs the section on `relay` (proxy mode, memoryRelayEnv) with `bareIdleBytes` measured beside it. */
export async function memorySection(relay: Server, bare: Server | undefined, o: MemoryOptions): Promise<SectionResult> {
  const failures: string[] = [];
  const figures: Record<string, number> = {};
  const auth = { "X-Relay-Server-Token": o.token };
  await Bun.sleep(IDLE_SETTLE_MS);
  const idle = rssBytes(relay.pid);
  figures.idle = idle;
  if (bare) figures.bareIdle = rssBytes(bare.pid);

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
  const held = await holdPolls(relay.port, creds.map(([k]) => k), o.token);
  try {
    await waitFor(`${o.holds} polls held`, async () => (await heldOn(relay.url, "servers/poll")) - before >= o.holds, 60_000);
    figures.holds = rssBytes(relay.pid);
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
  figures.afterHolds = rssBytes(relay.pid);

  // proxied streams
  o.log(`memory: opening ${o.streams} proxied streams...`);
  const streams: OpenStream[] = [];
  const BATCH = 500;
  try {
    for (let i = 0; i < o.streams; i += BATCH) {
      const batch = Array.from({ length: Math.min(BATCH, o.streams - i) }, () => openSse(relay.port, "/api/sse?n=1000&gap=10000", 0, 600_000));
      streams.push(...batch);
      await Promise.all(batch.map((s) => s.first));
    }
    const broken = (await Promise.all(streams.map((s) => Promise.race([s.done.then((r) => r.error ?? "ended"), Bun.sleep(0).then(() => undefined)])))).filter((e) => e !== undefined);
    if (broken.length > 0) failures.push(`memory: ${broken.length} proxied stream(s) ended before they were measured, first: ${broken[0]}`);
    figures.streams = rssBytes(relay.pid);
  } finally {
    streams.forEach((s) => s.close());
  }
  await Promise.all(streams.map((s) => s.done));
  await Bun.sleep(o.settleMs);
  figures.afterStreams = rssBytes(relay.pid);

  const targets: Target[] = [
    { what: "RSS idle (compiled relay)", figure: mib(figures.idle), target: `<= ${mib(IDLE_TARGET_BYTES)}`, met: figures.idle <= IDLE_TARGET_BYTES },
    { what: `RSS with ${o.holds.toLocaleString("en-US")} held polls`, figure: mib(figures.holds ?? NaN), target: `<= ${mib(LOADED_TARGET_BYTES)}`, met: figures.holds === undefined ? undefined : figures.holds <= LOADED_TARGET_BYTES },
    { what: "RSS after the holds closed (nodes left)", figure: mib(figures.afterHolds), target: `<= idle + 10 % (${mib(idle * AFTER_TARGET_RATIO)})`, met: figures.afterHolds <= idle * AFTER_TARGET_RATIO },
    { what: `RSS with ${o.streams.toLocaleString("en-US")} open proxied streams`, figure: mib(figures.streams ?? NaN), target: `<= ${mib(LOADED_TARGET_BYTES)}`, met: figures.streams === undefined ? undefined : figures.streams <= LOADED_TARGET_BYTES },
    { what: "RSS after the streams closed", figure: mib(figures.afterStreams), target: `<= idle + 10 % (${mib(idle * AFTER_TARGET_RATIO)})`, met: figures.afterStreams <= idle * AFTER_TARGET_RATIO },
  ];
  const row = (what: string, v: number | undefined) => [what, v === undefined ? "n/a" : mib(v), v === undefined || what.startsWith("bare") ? "" : `${(v / idle).toFixed(2)}x idle`];
  const body = [
    markdown(
      ["state", "RSS", "vs idle"],
      [
        row("bare compiled Bun.serve, idle", figures.bareIdle),
        row("relay idle (proxy mode, fresh start)", figures.idle),
        row(`relay with ${o.holds.toLocaleString("en-US")} held servers/poll`, figures.holds),
        row(`relay after they closed and the nodes left (+${o.settleMs / 1000} s)`, figures.afterHolds),
        row(`relay with ${o.streams.toLocaleString("en-US")} open proxied SSE streams`, figures.streams),
        row(`relay after they closed (+${o.settleMs / 1000} s)`, figures.afterStreams),
      ],
    ),
  ].join("\n");
  return { body, targets, failures, json: { holds: o.holds, streams: o.streams, settleMs: o.settleMs, rssBytes: figures } };
}
