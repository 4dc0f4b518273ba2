/**
 * Section "proxy" of `npm run bench`: the streaming proxy against nginx and against no proxy at
 * all, on one SSE upstream (bench/sse-upstream.ts: one event every `gapMs`, each stamped with its
 * send time). For 100 and 1,000 concurrent streams, every path in turn (direct, nginx, relay;
 * the order rotates) opens all streams at once with the raw-socket client (bench/sse-client.ts) and
 * reads `events` events on each. Figures: events/s delivered over the phase, time to first event
 * (TTFB), and per-event latency (arrival minus send time) p50/p99; "added" is the path's figure
 * minus direct's from the same run.
 *
 * nginx (Debian) runs with one worker, `proxy_buffering off`, HTTP/1.1 keep-alive to the upstream,
 * from a config generated into a temp dir (its own pid, logs and temp paths; run as the current
 * user). The relay is the compiled binary in proxy mode with its default settings but the limits a
 * thousand streams need (BUN_CONFIG_MAX_HTTP_REQUESTS, RELAY_MAX_CONNECTIONS).
 */
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { distribution } from "./load.ts";
import { markdown, msText, rate, ratioText, type SectionResult, type Target } from "./report.ts";
import { openSse } from "./sse-client.ts";
import { freePort } from "./peers.ts";
import { startOnPort, type Server } from "./child.ts";

export const NGINX_BIN = ["/usr/sbin/nginx", "/usr/bin/nginx"].find((p) => existsSync(p));
export type PathName = "direct" | "nginx" | "relay";
const PATHS: PathName[] = ["direct", "nginx", "relay"];

export interface StreamOptions {
  concurrency: number[];
  /** Each path x concurrency runs this many times, interleaved with the other paths, then merged. */
  rounds: number;
  /** Events per stream, and the gap between them (the steady rate). */
  events: number;
  gapMs: number;
  log: (msg: string) => void;
}

/** One phase: `streams` streams opened at once on one path, read to their end. */
interface PhaseRun {
  path: PathName;
  streams: number;
  ok: number;
  events: number;
  elapsedS: number;
  ttfbs: number[];
  latencies: number[];
  firstError?: string;
}

/** The rounds of one path x concurrency, merged. */
export interface PhaseResult {
  path: PathName;
  streams: number;
  rounds: number;
  ok: number;
  failed: number;
  firstError?: string;
  eventsPerSecond: number;
  ttfb: ReturnType<typeof distribution>;
  latency: ReturnType<typeof distribution>;
}

function mergePhases(runs: PhaseRun[]): PhaseResult {
  const first = runs[0]!;
  const streams = first.streams;
  const ok = runs.reduce((t, r) => t + r.ok, 0);
  const merged: PhaseResult = {
    path: first.path,
    streams,
    rounds: runs.length,
    ok,
    failed: streams * runs.length - ok,
    eventsPerSecond: runs.reduce((t, r) => t + r.events, 0) / runs.reduce((t, r) => t + r.elapsedS, 0),
    ttfb: distribution(runs.flatMap((r) => r.ttfbs)),
    latency: distribution(runs.flatMap((r) => r.latencies)),
  };
  const bad = runs.find((r) => r.firstError !== undefined);
  if (bad?.firstError) merged.firstError = bad.firstError;
  return merged;
}

/** nginx as a streaming reverse proxy in front of `upstreamPort`, in a temp prefix of its own. */
export async function startNginx(upstreamPort: number, logDir: string): Promise<Server> {
  if (!NGINX_BIN) throw new Error("nginx is not installed (apt-get install nginx-light)");
  const dir = mkdtempSync(join(tmpdir(), "tokenplace-bench-nginx-"));
  const port = await freePort();
  // `user` only means something to a master started as root: then the worker stays root too
  // (nginx would switch it to nobody), so it runs as the current user either way.
  const user = process.getuid?.() === 0 ? "user root root;" : "";
  const conf = `${user}
worker_processes 1;
worker_rlimit_nofile 65536;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream sse { server 127.0.0.1:${upstreamPort}; keepalive 64; }
  server {
    listen 127.0.0.1:${port};
    location = /healthz { return 200 "ok\\n"; }
    location / {
      proxy_pass http://sse;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 300s;
    }
  }
}
`;
  writeFileSync(join(dir, "nginx.conf"), conf);
  return startOnPort({ name: "nginx", cmd: [NGINX_BIN, "-p", dir, "-c", join(dir, "nginx.conf"), "-e", join(dir, "error.log"), "-g", "daemon off;"], env: {}, port, logDir });
}

/** Opens `streams` streams at once on `port` and reads `events` events on each. */
async function streamPhase(path: PathName, port: number, streams: number, o: Pick<StreamOptions, "events" | "gapMs">): Promise<PhaseRun> {
  const t0 = performance.now();
  const timeoutMs = o.events * o.gapMs + 30_000;
  const open = Array.from({ length: streams }, () => openSse(port, `/api/sse?n=${o.events}&gap=${o.gapMs}`, o.events, timeoutMs));
  const results = await Promise.all(open.map((s) => s.done));
  const run: PhaseRun = {
    path,
    streams,
    ok: results.filter((r) => r.error === undefined).length,
    events: results.reduce((t, r) => t + r.events, 0),
    elapsedS: (performance.now() - t0) / 1_000,
    ttfbs: results.filter((r) => Number.isFinite(r.ttfbMs)).map((r) => r.ttfbMs),
    latencies: results.flatMap((r) => r.latencies),
  };
  const bad = results.find((r) => r.error !== undefined);
  if (bad?.error) run.firstError = bad.error;
  return run;
}

/** Streams per path in the unmeasured warm-up (three events each). */
export const WARM_UP_STREAMS = 200;

export async function streamSection(ports: Record<PathName, number>, o: StreamOptions): Promise<SectionResult> {
  const runs: PhaseRun[] = [];
  const failures: string[] = [];
  // A warm-up on each path, the same for all: connection pools, nginx's upstream keep-alive, and
  // the relay's JIT (10 streams left its first measured burst in the interpreter and baseline
  // tiers while the compiler threads caught up: docs/proxy.md). A relay in service is warm.
  for (const p of PATHS) await streamPhase(p, ports[p], WARM_UP_STREAMS, { ...o, events: 3 });
  let turn = 0;
  for (let round = 0; round < o.rounds; round++) {
    for (const n of o.concurrency) {
      for (let k = 0; k < PATHS.length; k++) {
        const p = PATHS[(k + turn) % PATHS.length]!;
        o.log(`proxy: round ${round + 1}/${o.rounds}, ${n} streams ${p}...`);
        const r = await streamPhase(p, ports[p], n, o);
        runs.push(r);
        if (r.ok < r.streams) failures.push(`proxy ${p} ${n} streams: ${r.streams - r.ok} stream(s) failed, first: ${r.firstError}`);
        await Bun.sleep(500); // let the sockets of this phase close before the next opens its own
      }
      turn++;
    }
  }
  const phases = o.concurrency.flatMap((n) => PATHS.map((p) => mergePhases(runs.filter((r) => r.path === p && r.streams === n))));
  const rows: string[][] = [];
  const targets: Target[] = [];
  for (const n of o.concurrency) {
    const get = (p: PathName) => phases.find((x) => x.path === p && x.streams === n)!;
    const direct = get("direct");
    for (const p of PATHS) {
      const r = get(p);
      const added = (a: number, b: number) => (p === "direct" ? "" : ` (+${msText(a - b)})`);
      rows.push([
        String(n),
        p,
        `${rate(r.eventsPerSecond, "events/s")}${r.failed ? ` (${r.failed} failed)` : ""}`,
        msText(r.ttfb.p50) + added(r.ttfb.p50, direct.ttfb.p50),
        msText(r.ttfb.p99) + added(r.ttfb.p99, direct.ttfb.p99),
        msText(r.latency.p50) + added(r.latency.p50, direct.latency.p50),
        msText(r.latency.p99) + added(r.latency.p99, direct.latency.p99),
        p === "relay" ? `events/s ${ratioText(r.eventsPerSecond / get("nginx").eventsPerSecond)}, p50 ${ratioText(r.latency.p50 / get("nginx").latency.p50)}, p99 ${ratioText(r.latency.p99 / get("nginx").latency.p99)}, TTFB p99 ${ratioText(r.ttfb.p99 / get("nginx").ttfb.p99)}` : "",
      ]);
    }
    const relay = get("relay");
    const nginx = get("nginx");
    const ev = relay.eventsPerSecond / nginx.eventsPerSecond;
    // Judged on what each proxy adds over direct (the same upstream and client in the same run).
    const add = (r: PhaseResult, q: "p50" | "p99", what: "latency" | "ttfb") => r[what][q] - direct[what][q];
    targets.push({ what: `proxy, ${n} streams: events/s relay / nginx`, figure: ratioText(ev), target: ">= nginx (within 2 %: both carry the upstream's fixed rate)", met: ev >= 0.98 });
    for (const q of ["p50", "p99"] as const) {
      targets.push({
        what: `proxy, ${n} streams: per-event latency ${q}, relay vs nginx`,
        figure: `${msText(relay.latency[q])} vs ${msText(nginx.latency[q])} (added ${msText(add(relay, q, "latency"))} vs ${msText(add(nginx, q, "latency"))})`,
        target: "no worse than nginx",
        met: relay.latency[q] <= nginx.latency[q],
      });
    }
    targets.push({
      what: `proxy, ${n} streams: TTFB p99, relay vs nginx`,
      figure: `${msText(relay.ttfb.p99)} vs ${msText(nginx.ttfb.p99)}`,
      target: "no worse than nginx",
      met: relay.ttfb.p99 <= nginx.ttfb.p99,
    });
  }
  const body = [
    markdown(["streams", "path", "events/s", "TTFB p50 (added)", "TTFB p99 (added)", "per-event p50 (added)", "per-event p99 (added)", "relay / nginx"], rows),
    "",
    `Each stream: ${o.events} events, one every ${o.gapMs} ms (the first at once); all streams of a phase opened at once; ${o.rounds} round(s) per row, interleaved with the other paths and merged; "added" is the path minus direct in the same run.`,
  ].join("\n");
  return { body, targets, failures, json: { ...o, log: undefined, phases } };
}

