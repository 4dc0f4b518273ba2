/**
 * `npm run bench:floods` (`bun run bench/floods.ts [--quick] [--only=a,b] [--flood-ms=N]`): the four
 * floods that took the relay down before its limits (docs/security.md), repeated against the compiled relay with a 512 MiB memory
 * budget, on the legacy protocol (where the issue measured them) and on API v1 (the default
 * protocol), with the rate limits on (the default) and off (so the memory and connection bounds
 * themselves are what holds).
 *
 *   jobs     192 queued 4 MiB jobs into three node queues (legacy POST /faucet, v1 POST requests),
 *            16 at a time; one refused for capacity (503 busy) or cut off is sent again at once
 *   uploads  200 parallel 4 MiB uploads of the same, in waves while the flood lasts (at most 3)
 *   crowd    1,200 anonymous clients holding retrieves (legacy /retrieve; v1: each posts a request
 *            first, then holds responses/retrieve on it), each polling again as soon as answered
 *   bigkeys  500 clients holding retrieves whose key is 1 MB (real keys are ~600 characters),
 *            each sending again as soon as answered (at most 20 times)
 *
 * Every run starts a fresh dist/tokenplace-relay-linux-x64 on a loopback port with
 * RELAY_MEMORY_BUDGET_BYTES=536870912, TOKENPLACE_RELAY_ONLY=true, a registration token and
 * LOG_LEVEL=warn; the legacy routes only for the legacy floods. Addresses: everything is loopback,
 * so the relay trusts X-Forwarded-For from 127.0.0.1 (RELAY_PROXY_TRUST_FORWARDED=true,
 * RELAY_TRUSTED_PROXY_CIDRS=127.0.0.1/32) and each party names its address there: the flood one
 * address (198.51.100.66) or one per flood client (100.64.x.y), the nodes 192.0.2.10, and the
 * legitimate client a fresh address per request (100.100.x.y: many users, each under the public
 * quota of 60/hour).
 *
 * Measured per run:
 * - dispatch: a legitimate node holds its poll (/sink, servers/poll; 4 at once, so the node's own
 *   round trips do not set the pace) while a legitimate client posts it a small job every 50 ms; the
 *   time from that POST to the node's poll answer carrying the job, p50/p99, before the flood (quiet)
 *   and during it, and the POST's own round trip;
 * - the relay's RSS from /proc/<pid>/status (VmRSS every 50 ms, VmHWM) against the budget;
 * - the kernel's listen-queue overflows during the flood (TcpExt ListenOverflows, machine-wide):
 *   connections the relay's accept queue dropped, each one's SYN retried a second later;
 * - every answer the flood got, by status and code (a refusal must be JSON with a code of its own;
 *   5xx other than 503, non-JSON answers and 4xx/503 without a code are counted as violations; a
 *   429/503 without Retry-After is marked in its label), and the relay's own count of 5xx answers,
 *   refusals by reason, hold outcomes and the memory guard's forced collections (count, pauses) and
 *   refusals from /metrics;
 * - nothing accepted is lost: 5 jobs queued before the flood for a parked node, every legitimate job
 *   accepted during it, and every flood job the relay accepted are delivered intact afterwards.
 *
 * The flood runs in a child process (this file with --worker) over raw TCP connections, so it
 * neither shares the measuring process's event loop nor Bun's fetch connection cap, and it stops
 * writing a body once the relay has answered (as the relay's early refusals close the connection).
 * Every loop is bounded in time and count. Exit 1 when the relay crashed or answered 500, a
 * refusal broke the shape rule, or something accepted was lost; the targets are printed, not enforced.
 */
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { distribution, type Distribution } from "./load.ts";
import { RELAY_BIN, REPO } from "./peers.ts";
import { machineFacts } from "./report.ts";
import { NODE_CAPABILITIES as CAPABILITIES, PROTOCOL } from "../src/demo/protocol.ts";
import { pumpLines } from "../src/demo/relay-process.ts";
import { listeningOrWhyNot, stopChild } from "./child.ts";
import { fakeKey } from "./scenarios.ts";
import { processCpuMs } from "./state.ts";
import { benchArgs } from "./args.ts";

const MiB = 1024 * 1024;
const ARGS = benchArgs("bench/floods.ts", {
  quick: "flag",
  only: "list",
  budget: "count",
  "relay-env": "list",
  "relay-bin": "text",
  "no-pin": "flag",
  "flood-ms": "count",
  "quiet-ms": "count",
  /** Internal: the flood generator's child process (its spec as JSON). */
  worker: "text",
});
/** RELAY_MEMORY_BUDGET_BYTES: the issue's 512 MiB unless `--budget=BYTES` (e.g. 402653184, the default a 512 MiB container gets). */
const BUDGET_BYTES = ARGS.budget ?? 536_870_912;
/** Extra relay settings, `--relay-env=NAME=value,NAME=value` (e.g. RELAY_MAX_INFLIGHT_BODY_BYTES=16777216). */
const EXTRA_ENV: Record<string, string> = Object.fromEntries(
  (ARGS["relay-env"] ?? []).map((kv) => {
    const i = kv.indexOf("=");
    if (i <= 0) throw new Error(`--relay-env wants NAME=value pairs, got ${kv}`);
    return [kv.slice(0, i), kv.slice(i + 1)];
  }),
);
const TOKEN = `bench-floods-${crypto.randomUUID()}`;
const NODE_IP = "192.0.2.10";
const FLOOD_IP = "198.51.100.66";
const MAX_BODY = 4 * MiB; // RELAY_MAX_BODY_BYTES default
/** The relay under test: the compiled binary, or another build with `--relay-bin=PATH` (to compare builds). */
const BIN = ARGS["relay-bin"] ?? RELAY_BIN;
const DISPATCH_TARGET_MS = 50;
/**
 * CPU pinning (taskset, when there are >= 2 cores): the relay and the measuring process on CPU 0,
 * the flood generator on the others. On a real deployment the flood comes over the network and
 * costs the relay's host nothing to generate; on one machine the generator would otherwise take
 * CPU from the relay. `--no-pin` turns it off.
 */
const CORES = navigator.hardwareConcurrency;
const PIN = CORES >= 2 && !ARGS["no-pin"] && Bun.which("taskset") !== null;
const RELAY_CPUS = "0";
const FLOOD_CPUS = `1-${CORES - 1}`;
const pinned = (cpus: string, cmd: string[]) => (PIN ? ["taskset", "-c", cpus, ...cmd] : cmd);
const POST_EVERY_MS = 50;
const PARKED_JOBS = 5;
/** Polls the legitimate node holds at once (see the node loop). */
const NODE_POLLERS = 4;

/** The i-th address of a /16 under `a.b`: 1..65,534 distinct clients. */
const addr = (prefix: string, i: number) => `${prefix}.${(i >> 8) & 255}.${(i & 255) || 1}`;
const floodIp = (many: boolean, i: number) => (many ? addr("100.64", i + 1) : FLOOD_IP);
/** Base64 text of `bytes` bytes' length (random, repeated past 48 KiB: the relay never looks inside). */
function b64(bytes: number): string {
  const chars = Math.ceil((bytes * 4) / 3);
  const seed = Buffer.from(crypto.getRandomValues(new Uint8Array(Math.min(bytes, 49_152)))).toString("base64");
  return seed.repeat(Math.ceil(chars / seed.length)).slice(0, chars);
}

type Protocol = "legacy" | "v1";
type Kind = "jobs" | "uploads" | "crowd" | "bigkeys";

/** What the worker is told: one flood against one relay. */
interface FloodSpec {
  kind: Kind;
  protocol: Protocol;
  port: number;
  durationMs: number;
  manyAddresses: boolean;
  /** The three node keys the job floods (and the v1 crowd's requests) go to. */
  targets: string[];
  runId: string;
}

/** What the worker reports. */
interface FloodResult {
  requests: number;
  /** Answers by "status code". */
  answers: Record<string, number>;
  /** No answer: connection reset/closed before a response, timeouts, connect errors. */
  noAnswer: Record<string, number>;
  /** Refusals that broke the shape rule (non-JSON, a 5xx other than 503, no code). */
  violations: Record<string, number>;
  examples: Record<string, string>;
  /** Requests still unanswered (held, or their body still being read) when the flood ended and left: not the relay's doing. */
  heldAtEnd: number;
  notes: string[];
  /** Flood jobs the relay accepted: marker -> chat_history length. */
  accepted: Record<string, number>;
  acceptedByNode: Record<string, number>;
  bytesSent: number;
  elapsedMs: number;
}

// ============================================================================ answers

/** A label for an answer: the status and the body's own code (error.type, a string error.code, the message). */
function classify(status: number, text: string, headers: Record<string, string>): { label: string; violation?: string } {
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch {
    return { label: `${status} (not JSON)`, violation: `${status} answered without a JSON body` };
  }
  const o = (j && typeof j === "object" ? j : {}) as Record<string, unknown>;
  if (status < 400) {
    if (typeof o.error === "string") return { label: `${status} no answer yet` };
    if (o.error && typeof o.error === "object") return { label: `${status} ${codeOf(o.error as Record<string, unknown>)}` };
    if (status === 202) return { label: "202 pending" };
    if (typeof o.message === "string") return { label: `${status} accepted` };
    return { label: `${status} delivered` };
  }
  let code: string | undefined;
  if (typeof o.error === "string") code = o.error;
  else if (o.error && typeof o.error === "object") code = codeOf(o.error as Record<string, unknown>);
  const label = `${status} ${code ?? "(no code)"}`;
  if (status >= 500 && status !== 503) return { label, violation: `${status} from the relay` };
  if (code === undefined) return { label, violation: `${status} without an error code` };
  // Retry-After is only noted (the label says so): HTTP leaves it optional, the relay sends it on most.
  if ((status === 429 || status === 503) && !headers["retry-after"]) return { label: `${label} (no Retry-After)` };
  return { label };
}

function codeOf(e: Record<string, unknown>): string {
  const reason = typeof e.reason === "string" ? ` (${e.reason})` : "";
  if (typeof e.type === "string" && e.type !== "rate_limit_error") return e.type + reason;
  if (typeof e.code === "string") return e.code + reason;
  // Numeric codes (upstream's shapes): the message, without the id some of them echo.
  if (typeof e.message === "string") return `"${e.message.replace(/: .*$/, ": ...")}"`;
  return "(no code)";
}

const bump = (m: Record<string, number>, k: string, n = 1) => (m[k] = (m[k] ?? 0) + n);

// ============================================================================ raw HTTP/1.1 client (worker)

interface RawAnswer {
  kind: "answer";
  status: number;
  headers: Record<string, string>;
  body: string;
  /** The connection cannot carry another request (server closed or asked to, or the body was cut short). */
  done: boolean;
}
type RawOutcome = RawAnswer | { kind: "none"; why: string };

/**
 * One keep-alive TCP connection. A request's body is written in 64 KiB slices, and writing stops
 * as soon as the relay has answered: its early refusals (503 busy before the body, 413) close the
 * connection, and a client that keeps writing then loses the answer to a reset.
 */
class RawConn {
  private buf: Buffer = Buffer.alloc(0);
  private wakeUp: (() => void) | undefined;
  private needDrain = false;
  closed = false;
  error: string | undefined;

  private constructor(private readonly sock: Socket) {
    sock.setNoDelay(true);
    sock.on("data", (d: Buffer) => {
      this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
      this.wake();
    });
    sock.on("drain", () => {
      this.needDrain = false;
      this.wake();
    });
    sock.on("error", (e: NodeJS.ErrnoException) => {
      this.error ??= e.code ?? e.message;
    });
    sock.on("close", () => {
      this.closed = true;
      this.wake();
    });
  }

  static open(port: number): Promise<RawConn | string> {
    return new Promise((resolve) => {
      const sock = connect({ port, host: "127.0.0.1" });
      const fail = (e: NodeJS.ErrnoException) => resolve(`connect ${e.code ?? e.message}`);
      sock.once("error", fail);
      sock.once("connect", () => {
        sock.off("error", fail);
        resolve(new RawConn(sock));
      });
    });
  }

  private wake() {
    const w = this.wakeUp;
    this.wakeUp = undefined;
    w?.();
  }

  private until(deadline: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => this.wake(), Math.max(1, deadline - performance.now()));
      this.wakeUp = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  destroy() {
    this.sock.destroy();
    this.closed = true;
  }

  async request(head: string, parts: Buffer[], timeoutMs: number): Promise<{ outcome: RawOutcome; sent: number }> {
    const deadline = performance.now() + timeoutMs;
    this.buf = Buffer.alloc(0);
    let sent = 0;
    let cut = false;
    this.sock.write(head);
    outer: for (const part of parts) {
      for (let off = 0; off < part.length; off += 65_536) {
        while (this.needDrain && !this.closed && this.buf.length === 0 && performance.now() < deadline) await this.until(deadline);
        if (this.closed || this.buf.length > 0 || performance.now() >= deadline) {
          cut = true;
          break outer;
        }
        const slice = part.subarray(off, Math.min(part.length, off + 65_536));
        if (!this.sock.write(slice)) this.needDrain = true;
        sent += slice.length;
      }
    }
    for (;;) {
      const parsed = this.parse();
      if (parsed) {
        parsed.done ||= cut || this.closed;
        return { outcome: parsed, sent };
      }
      if (this.closed) return { outcome: { kind: "none", why: this.error ? `reset (${this.error})` : "closed without an answer" }, sent };
      if (performance.now() >= deadline) return { outcome: { kind: "none", why: "timeout" }, sent };
      await this.until(deadline);
    }
  }

  private parse(): RawAnswer | undefined {
    const split = this.buf.indexOf("\r\n\r\n");
    if (split < 0) return undefined;
    const head = this.buf.subarray(0, split).toString("latin1");
    const headers: Record<string, string> = {};
    for (const line of head.split("\r\n").slice(1)) {
      const i = line.indexOf(":");
      if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    const status = Number(head.split(" ")[1] ?? 0);
    const length = headers["content-length"];
    if (length === undefined) {
      // No length (not expected from the relay): the body ends with the connection.
      if (!this.closed) return undefined;
      return { kind: "answer", status, headers, body: this.buf.subarray(split + 4).toString("utf8"), done: true };
    }
    const end = split + 4 + Number(length);
    if (this.buf.length < end) return undefined;
    const body = this.buf.subarray(split + 4, end).toString("utf8");
    return { kind: "answer", status, headers, body, done: headers.connection?.toLowerCase() === "close" };
  }
}

/** A flood client: one address, a keep-alive connection it reopens whenever the relay closed it. */
class FloodClient {
  private conn: RawConn | undefined;
  constructor(
    private readonly port: number,
    private readonly ip: string,
  ) {}

  async post(path: string, parts: Buffer[], timeoutMs: number): Promise<{ outcome: RawOutcome; sent: number }> {
    if (!this.conn || this.conn.closed) {
      const c = await RawConn.open(this.port);
      if (typeof c === "string") return { outcome: { kind: "none", why: c }, sent: 0 };
      this.conn = c;
    }
    const length = parts.reduce((n, p) => n + p.length, 0);
    const head =
      `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1:${this.port}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${length}\r\nX-Forwarded-For: ${this.ip}\r\n\r\n`;
    const r = await this.conn.request(head, parts, timeoutMs);
    if (r.outcome.kind !== "answer" || r.outcome.done) this.close();
    return r;
  }

  close() {
    this.conn?.destroy();
    this.conn = undefined;
  }
}

// ============================================================================ the floods (worker)

const PATHS = {
  legacy: { job: "/faucet", retrieve: "/retrieve" },
  v1: { job: "/api/v1/relay/requests", retrieve: "/api/v1/relay/responses/retrieve" },
} as const;

/** A ~4 MiB job body (just under RELAY_MAX_BODY_BYTES) as three buffers: the big middle one is shared. */
function bigJob(spec: FloodSpec, filler: Buffer, marker: string, target: string, clientKey: string): Buffer[] {
  const small = { cipherkey: b64(256), iv: b64(16) };
  const head =
    spec.protocol === "legacy"
      ? `{"server_public_key":${JSON.stringify(target)},"client_public_key":${JSON.stringify(clientKey)},"cipherkey":"${small.cipherkey}","iv":"${small.iv}","chat_history":"${marker}`
      : `{"server_public_key":${JSON.stringify(target)},"client_public_key":${JSON.stringify(clientKey)},"request_id":"${marker}","protocol":"${PROTOCOL}","version":1,"cipherkey":"${small.cipherkey}","iv":"${small.iv}","chat_history":"${marker}`;
  return [Buffer.from(head), filler, Buffer.from(`"}`)];
}

async function runFlood(spec: FloodSpec): Promise<FloodResult> {
  const t0 = performance.now();
  const end = t0 + spec.durationMs;
  const res: FloodResult = { requests: 0, answers: {}, noAnswer: {}, violations: {}, examples: {}, heldAtEnd: 0, notes: [], accepted: {}, acceptedByNode: {}, bytesSent: 0, elapsedMs: 0 };
  const record = (r: { outcome: RawOutcome; sent: number }) => {
    if (r.outcome.kind === "none" && r.outcome.why === "timeout" && performance.now() >= end - 5) {
      res.heldAtEnd++;
      return undefined;
    }
    res.requests++;
    res.bytesSent += r.sent;
    if (r.outcome.kind === "none") {
      bump(res.noAnswer, r.outcome.why);
      return undefined;
    }
    const { label, violation } = classify(r.outcome.status, r.outcome.body, r.outcome.headers);
    bump(res.answers, label);
    if (violation) bump(res.violations, violation);
    res.examples[label] ??= r.outcome.body.slice(0, 300);
    return r.outcome;
  };
  const paths = PATHS[spec.protocol];
  // Filler: 4 MiB minus room for the envelope's other fields (keys ~600, cipherkey 344, iv 24).
  const fillerChars = MAX_BODY - 4096;
  const filler = Buffer.from(b64(Math.ceil((fillerChars * 3) / 4)).slice(0, fillerChars));
  let seq = 0;

  const sendJob = async (client: FloodClient, i = seq++) => {
    const marker = `flood-${spec.runId}-${i}-`;
    const target = spec.targets[i % spec.targets.length]!;
    const r = await client.post(paths.job, bigJob(spec, filler, marker, target, fakeKey()), 30_000);
    const a = record(r);
    if (a && a.status === 200) {
      res.accepted[marker] = marker.length + filler.length;
      bump(res.acceptedByNode, target);
    }
    return a;
  };

  switch (spec.kind) {
    case "jobs": {
      // 192 jobs, 16 at a time, from one address: a job refused only for capacity (503 busy) or
      // cut off by a reset is sent again at once (a persistent flood), until 192 were decided by
      // the relay's state bounds (accepted, queue/storage full, rate limited).
      const total = 192;
      let decided = 0;
      let attempts = 0;
      await Promise.all(
        Array.from({ length: 16 }, async (_, w) => {
          const client = new FloodClient(spec.port, floodIp(spec.manyAddresses, w));
          while (seq < total && performance.now() < end) {
            const i = seq++;
            for (;;) {
              attempts++;
              const a = await sendJob(client, i);
              const retry = a === undefined || (a.status === 503 && a.body.includes('"busy"'));
              if (!retry || performance.now() >= end || attempts >= 5_000) break;
            }
            decided++;
          }
          client.close();
        }),
      );
      res.notes.push(`${decided} jobs decided in ${attempts} attempts`);
      break;
    }
    case "uploads": {
      // Waves of 200 uploads at once, while the flood lasts (at most 3 waves).
      for (let wave = 0; wave < 3 && performance.now() < end; wave++) {
        await Promise.all(
          Array.from({ length: 200 }, async (_, w) => {
            const client = new FloodClient(spec.port, floodIp(spec.manyAddresses, w));
            await sendJob(client);
            client.close();
          }),
        );
      }
      break;
    }
    case "crowd": {
      // 1,200 clients, each holding a retrieve and polling again as soon as it is answered.
      const N = 1_200;
      const maxRequests = 250_000;
      const clients = Array.from({ length: N }, (_, i) => new FloodClient(spec.port, floodIp(spec.manyAddresses, i)));
      const bodies: Buffer[] = [];
      if (spec.protocol === "v1") {
        // A retrieve is held only for a live request of the client's own: post one each first.
        await Promise.all(
          clients.map(async (client, i) => {
            const key = fakeKey();
            const id = `flood-${spec.runId}-${i}`;
            const target = spec.targets[i % spec.targets.length]!;
            const body = { server_public_key: target, client_public_key: key, request_id: id, protocol: PROTOCOL, version: 1, chat_history: id + b64(512), cipherkey: b64(256), iv: b64(16) };
            const a = record(await client.post(paths.job, [Buffer.from(JSON.stringify(body))], 30_000));
            if (a && a.status === 200) {
              res.accepted[id] = body.chat_history.length;
              bump(res.acceptedByNode, target);
            }
            bodies[i] = Buffer.from(JSON.stringify({ client_public_key: key, request_id: id }));
          }),
        );
      } else {
        for (let i = 0; i < N; i++) bodies[i] = Buffer.from(JSON.stringify({ client_public_key: fakeKey() }));
      }
      await Promise.all(
        clients.map(async (client, i) => {
          while (performance.now() < end && res.requests < maxRequests) {
            // Held until the answer or the end of the flood, when the client leaves.
            const r = await client.post(paths.retrieve, [bodies[i]!], Math.max(1, end - performance.now()));
            if (record(r) === undefined) await Bun.sleep(20); // no answer: do not spin on a dead socket
          }
          client.close();
        }),
      );
      break;
    }
    case "bigkeys": {
      // 500 clients, each sending a retrieve with a 1 MB key again as soon as answered (<= 20 each).
      const N = 500;
      const key = Buffer.from(b64(750_000).slice(0, 1_000_000));
      await Promise.all(
        Array.from({ length: N }, async (_, i) => {
          const client = new FloodClient(spec.port, floodIp(spec.manyAddresses, i));
          const tail = Buffer.from(spec.protocol === "v1" ? `","request_id":"flood-${spec.runId}-${i}"}` : `"}`);
          for (let k = 0; k < 20 && performance.now() < end; k++) {
            const r = await client.post(paths.retrieve, [Buffer.from(`{"client_public_key":"`), key, tail], Math.max(1, end - performance.now()));
            if (record(r) === undefined) await Bun.sleep(20);
          }
          client.close();
        }),
      );
      break;
    }
  }
  res.elapsedMs = performance.now() - t0;
  // The flood lasts its whole duration: jobs it queued stay queued (and in memory) meanwhile.
  const left = end - performance.now();
  if (left > 0) await Bun.sleep(left);
  return res;
}

async function workerMain(specText: string) {
  const spec = JSON.parse(specText) as FloodSpec;
  console.log(JSON.stringify({ started: true }));
  const result = await runFlood(spec);
  console.log(JSON.stringify({ result }));
}

// ============================================================================ the relay (main)

interface Relay {
  url: string;
  pid: number;
  logs: { warn: number; error: number; firstError?: string };
  exited(): number | null;
  stop(): Promise<number>;
}

async function startRelay(env: Record<string, string>): Promise<Relay> {
  // taskset execs the relay: the pid is the relay's.
  const proc = Bun.spawn(pinned(RELAY_CPUS, [BIN]), {
    cwd: REPO,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const logs: Relay["logs"] = { warn: 0, error: 0 };
  let onPort!: (p: number) => void;
  const port = new Promise<number>((r) => (onPort = r));
  const early: string[] = [];
  const onLine = (line: string) => {
    if (early.length < 20) early.push(line.slice(0, 500));
    let j: { level?: string | number; port?: unknown; msg?: string } = {};
    try {
      j = JSON.parse(line);
    } catch {
      logs.error++;
      logs.firstError ??= line.slice(0, 500);
      return;
    }
    if (j.msg === "listening" && typeof j.port === "number") onPort(j.port);
    const level = String(j.level);
    if (level === "warn" || level === "40") logs.warn++;
    else if (level === "error" || level === "fatal" || level === "50" || level === "60") {
      logs.error++;
      logs.firstError ??= line.slice(0, 500);
    }
  };
  void pumpLines(proc.stdout, onLine);
  void pumpLines(proc.stderr, onLine);
  const got = await listeningOrWhyNot(port, proc.exited);
  const stop = () => stopChild(proc, 5_000);
  if (typeof got === "string") {
    await stop();
    throw new Error(`relay ${got}:\n${early.join("\n")}`);
  }
  return { url: `http://127.0.0.1:${got}`, pid: proc.pid, logs, exited: () => (proc.exitCode ?? (proc.signalCode ? -1 : null)), stop };
}

/** The kernel's TcpExt ListenOverflows counter (machine-wide); NaN where /proc/net/netstat is not readable. */
function listenOverflows(): number {
  try {
    const lines = readFileSync("/proc/net/netstat", "utf8").split("\n");
    const names = lines.find((l) => l.startsWith("TcpExt:"))?.split(/\s+/) ?? [];
    const values = lines.filter((l) => l.startsWith("TcpExt:"))[1]?.split(/\s+/) ?? [];
    const i = names.indexOf("ListenOverflows");
    return i > 0 ? Number(values[i]) : NaN;
  } catch {
    return NaN;
  }
}

/** VmRSS and VmHWM of a process in bytes (undefined once it is gone). */
async function memoryOf(pid: number): Promise<{ rss: number; hwm: number } | undefined> {
  try {
    const s = await Bun.file(`/proc/${pid}/status`).text();
    const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(s)?.[1] ?? NaN) * 1024;
    return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
  } catch {
    return undefined;
  }
}

/** What the relay counted itself: 5xx answers by status, refusals by reason, how held polls ended. */
interface RelayCounts {
  fivexx: Record<string, number>;
  rejections: Record<string, number>;
  holds: Record<string, number>;
  /** The memory guard (src/ops/memory-guard.ts): forced full collections and their pauses, refusals by side. */
  guard: { forcedGc: number; gcSeconds: number; gcOver50ms: number; refusals: Record<string, number> };
}

async function relayCounts(url: string): Promise<RelayCounts> {
  const out: RelayCounts = { fivexx: {}, rejections: {}, holds: {}, guard: { forcedGc: 0, gcSeconds: 0, gcOver50ms: 0, refusals: {} } };
  try {
    const text = await (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
    const series = (name: string) => [...text.matchAll(new RegExp(`^${name}\\{([^}]*)\\} (\\S+)$`, "gm"))].map((m) => ({ labels: m[1]!, value: Number(m[2]) }));
    const label = (labels: string, name: string) => new RegExp(`${name}="([^"]*)"`).exec(labels)?.[1] ?? "";
    for (const { labels, value } of series("tokenplace_relay_http_requests_total")) {
      const status = label(labels, "status");
      if (status.startsWith("5") && value > 0) bump(out.fivexx, status, value);
    }
    for (const { labels, value } of series("tokenplace_relay_rejections_total")) if (value > 0) bump(out.rejections, label(labels, "reason"), value);
    for (const { labels, value } of series("tokenplace_relay_long_poll_outcomes_total")) {
      if (value > 0) bump(out.holds, `${label(labels, "route")} ${label(labels, "outcome")}`, value);
    }
    const plain = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? 0);
    out.guard.forcedGc = plain("tokenplace_relay_memory_forced_gc_seconds_count");
    out.guard.gcSeconds = plain("tokenplace_relay_memory_forced_gc_seconds_sum");
    const upTo50 = series("tokenplace_relay_memory_forced_gc_seconds_bucket").find((s) => label(s.labels, "le") === "0.05")?.value ?? 0;
    out.guard.gcOver50ms = out.guard.forcedGc - upTo50;
    for (const { labels, value } of series("tokenplace_relay_memory_guard_refusals_total")) if (value > 0) bump(out.guard.refusals, label(labels, "side"), value);
  } catch {
    out.fivexx["metrics unreadable"] = 1;
  }
  return out;
}

// ============================================================================ legitimate peers (main)

interface Answer {
  status: number;
  json: Record<string, unknown>;
  at: number;
}

async function post(url: string, body: unknown, headers: Record<string, string>, signal?: AbortSignal): Promise<Answer> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
    signal: signal ?? AbortSignal.timeout(20_000),
  });
  const text = await res.text();
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = { "(not JSON)": text.slice(0, 200) };
  }
  return { status: res.status, json, at: performance.now() };
}

const NODE_HEADERS = { "X-Relay-Server-Token": TOKEN, "X-Forwarded-For": NODE_IP };
let legitSeq = 0;
const legitIp = () => addr("100.100", ++legitSeq);

/** A protocol's node and client operations, as the bench's legitimate peers use them. */
interface Peers {
  /** Registers a node key; for legacy a short /sink that is then abandoned. */
  register(key: string): Promise<void>;
  /** One poll (held); the work items it carried, by marker. */
  poll(key: string, signal?: AbortSignal): Promise<{ items: { marker: string; chatHistory: string }[]; status: number; json: Record<string, unknown> }>;
  /** Posts a job (legit client, a fresh address per post). */
  postJob(node: string, marker: string, chatHistory: string): Promise<Answer>;
}

function peersFor(protocol: Protocol, relay: string): Peers {
  const cipher = { cipherkey: b64(256), iv: b64(16) };
  if (protocol === "legacy") {
    return {
      async register(key) {
        // /sink registers the node before holding; the hold is cut short (the relay notices the abort).
        const ac = new AbortController();
        const p = post(`${relay}/sink`, { server_public_key: key }, NODE_HEADERS, ac.signal).catch(() => undefined);
        await Bun.sleep(150);
        ac.abort();
        await p;
      },
      async poll(key, signal) {
        const a = await post(`${relay}/sink`, { server_public_key: key, max_batch_size: 16 }, NODE_HEADERS, signal);
        const batch = Array.isArray(a.json.batch) ? (a.json.batch as Record<string, unknown>[]) : typeof a.json.chat_history === "string" ? [a.json] : [];
        return {
          status: a.status,
          json: a.json,
          items: batch.map((j) => {
            const ch = String(j.chat_history);
            return { marker: ch.slice(0, ch.indexOf("-", ch.indexOf("-", ch.indexOf("-") + 1) + 1) + 1), chatHistory: ch };
          }),
        };
      },
      postJob: (node, _marker, chatHistory) =>
        post(`${relay}/faucet`, { server_public_key: node, client_public_key: fakeKey(), chat_history: chatHistory, ...cipher }, { "X-Forwarded-For": legitIp() }),
    };
  }
  return {
    async register(key) {
      const a = await post(`${relay}/api/v1/relay/servers/register`, { server_public_key: key, capabilities: CAPABILITIES }, NODE_HEADERS);
      if (a.status !== 200) throw new Error(`servers/register answered ${a.status} ${JSON.stringify(a.json)}`);
    },
    async poll(key, signal) {
      const a = await post(`${relay}/api/v1/relay/servers/poll`, { server_public_key: key }, NODE_HEADERS, signal);
      const items = a.status === 200 && typeof a.json.request_id === "string" ? [{ marker: a.json.request_id, chatHistory: String(a.json.chat_history) }] : [];
      return { status: a.status, json: a.json, items };
    },
    postJob: (node, marker, chatHistory) =>
      post(
        `${relay}/api/v1/relay/requests`,
        { server_public_key: node, client_public_key: fakeKey(), request_id: marker, protocol: PROTOCOL, version: 1, chat_history: chatHistory, ...cipher },
        { "X-Forwarded-For": legitIp() },
      ),
  };
}

/** Marker of a legacy job: the chat_history starts with "<word>-<run>-<i>-". */
const legitMarker = (runId: string, i: number) => `legit-${runId}-${i}-`;

// ============================================================================ one run (main)

interface RunSpec {
  name: string;
  protocol: Protocol;
  kind: Kind;
  rateLimits: boolean;
  manyAddresses: boolean;
}

interface RunResult {
  spec: RunSpec;
  rssBeforeBytes: number;
  /** VmRSS when the flood ended (what the relay kept, garbage not yet returned included). */
  rssAfterFloodBytes: number;
  peakRssFloodBytes: number;
  peakRssRunBytes: number;
  relayCpuPercentDuringFlood: number;
  /**
   * The kernel's ListenOverflows during the flood (machine-wide, /proc/net/netstat): connections
   * dropped because the relay's accept queue (Bun's backlog, 512) was full. Each dropped SYN is
   * retransmitted after a second, so a legitimate peer's new connection can wait that long.
   */
  listenOverflowsDuringFlood: number;
  dispatchQuiet: Distribution;
  dispatchFlood: Distribution;
  /** The legitimate client's POST round trip (its answer) during the flood. */
  ackFlood: Distribution;
  slowSamples: number;
  legit: { posted: number; accepted: number; refused: Record<string, number>; delivered: number; lost: number; corrupted: number; errors: Record<string, number> };
  parked: { accepted: number; delivered: number };
  flood: FloodResult;
  floodDelivered: number;
  floodCorrupted: number;
  relayCounts: RelayCounts;
  relayAliveAfterFlood: boolean;
  relayExitCode: number;
  relayLogs: Relay["logs"];
  floodMs: number;
  problems: string[];
}

async function runOne(spec: RunSpec, opts: { floodMs: number; quietMs: number }): Promise<RunResult> {
  const runId = crypto.randomUUID().slice(0, 8);
  const env: Record<string, string> = {
    RELAY_PORT: "0",
    RELAY_HOST: "127.0.0.1",
    RELAY_MEMORY_BUDGET_BYTES: String(BUDGET_BYTES),
    TOKENPLACE_RELAY_ONLY: "true",
    TOKEN_PLACE_RELAY_SERVER_TOKEN: TOKEN,
    TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES: spec.protocol === "legacy" ? "true" : "false",
    RELAY_PROXY_TRUST_FORWARDED: "true",
    RELAY_TRUSTED_PROXY_CIDRS: "127.0.0.1/32",
    RELAY_RATE_LIMITS: spec.rateLimits ? "on" : "off",
    RELAY_SHUTDOWN_GRACE_MS: "2000",
    LOG_LEVEL: "warn",
    ...EXTRA_ENV,
  };
  const relay = await startRelay(env);
  const problems: string[] = [];
  const samples: { t: number; rss: number; hwm: number }[] = [];
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const m = await memoryOf(relay.pid);
      if (m) samples.push({ t: performance.now(), ...m });
      await Bun.sleep(50);
    }
  })();

  try {
    const peers = peersFor(spec.protocol, relay.url);
    const legitNode = fakeKey();
    const parkedNode = fakeKey();
    const floodNodes = [fakeKey(), fakeKey(), fakeKey()];
    for (const k of [legitNode, parkedNode, ...floodNodes]) await peers.register(k);

    // Jobs queued before the flood for a node that only collects them afterwards.
    const parkedSent = new Map<string, string>();
    for (let i = 0; i < PARKED_JOBS; i++) {
      const marker = `parked-${runId}-${i}-`;
      const ch = marker + b64(384);
      const a = await peers.postJob(parkedNode, marker, ch);
      if (a.status === 200) parkedSent.set(marker, ch);
      else problems.push(`parked job refused before the flood: ${a.status} ${JSON.stringify(a.json).slice(0, 200)}`);
    }

    // The legitimate node: holds NODE_POLLERS polls at once, takes work, polls again at once. An
    // API v1 poll carries one item: with a single poll, a job posted while the node's next poll is
    // still on its way waits for that round trip, which a flood stretches; then the node, not the
    // relay, sets the pace (20 jobs/s is more than one poll at a time can take from a busy relay).
    const delivered = new Map<string, { at: number; chatHistory: string }>();
    let nodeRunning = true;
    const nodeAbort = new AbortController();
    const nodeErrors: Record<string, number> = {};
    const nodeLoop = Promise.all(Array.from({ length: NODE_POLLERS }, async () => {
      while (nodeRunning) {
        try {
          const r = await peers.poll(legitNode, nodeAbort.signal);
          for (const it of r.items) delivered.set(it.marker, { at: performance.now(), chatHistory: it.chatHistory });
          if (r.status !== 200) {
            bump(nodeErrors, `node poll ${r.status} ${JSON.stringify(r.json).slice(0, 120)}`);
            await Bun.sleep(100);
          }
        } catch (err) {
          if (!nodeRunning) break;
          bump(nodeErrors, `node poll: ${err instanceof Error ? err.message : String(err)}`);
          await Bun.sleep(100);
        }
      }
    }));

    // The legitimate client: a small job for that node every 50 ms, each from a fresh address.
    const posted = new Map<string, { t0: number; chatHistory: string; status?: number; code?: string; ackAt?: number }>();
    const legitErrors: Record<string, number> = {};
    const inflight = new Set<Promise<void>>();
    let i = 0;
    const postUntil = async (until: () => boolean) => {
      while (!until()) {
        const marker = legitMarker(runId, i++);
        const ch = marker + b64(384);
        const entry: { t0: number; chatHistory: string; status?: number; code?: string; ackAt?: number } = { t0: performance.now(), chatHistory: ch };
        posted.set(marker, entry);
        const p = peers
          .postJob(legitNode, marker, ch)
          .then((a) => {
            entry.status = a.status;
            entry.ackAt = a.at;
            if (a.status !== 200) entry.code = classify(a.status, JSON.stringify(a.json), { "retry-after": "?" }).label;
          })
          .catch((err: unknown) => {
            entry.status = -1;
            bump(legitErrors, err instanceof Error ? err.message : String(err));
          })
          .finally(() => inflight.delete(p));
        inflight.add(p);
        await Bun.sleep(POST_EVERY_MS);
      }
    };

    // Warm up (JIT, connection pools), then the quiet baseline.
    const warmEnd = performance.now() + 300;
    await postUntil(() => performance.now() > warmEnd);
    const quietStart = performance.now();
    await postUntil(() => performance.now() > quietStart + opts.quietMs);
    const rssBefore = (await memoryOf(relay.pid))?.rss ?? NaN;

    // The flood, in a child process; the legitimate client keeps posting until it ends.
    const floodSpec: FloodSpec = { kind: spec.kind, protocol: spec.protocol, port: Number(new URL(relay.url).port), durationMs: opts.floodMs, manyAddresses: spec.manyAddresses, targets: floodNodes, runId };
    const worker = Bun.spawn(pinned(FLOOD_CPUS, [process.execPath, import.meta.path, `--worker=${JSON.stringify(floodSpec)}`]), { cwd: REPO, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
    let floodStart = NaN;
    let floodEnd = NaN;
    let cpu0 = NaN;
    let cpu1 = NaN;
    let overflows0 = NaN;
    let overflows1 = NaN;
    let flood: FloodResult | undefined;
    let onStarted!: () => void;
    const started = new Promise<void>((r) => (onStarted = r));
    const watchdog = setTimeout(() => worker.kill("SIGKILL"), opts.floodMs + 60_000);
    const workerOut = (async () => {
      const dec = new TextDecoder();
      let buf = "";
      for await (const chunk of worker.stdout) {
        buf += dec.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          const j = JSON.parse(line) as { started?: boolean; result?: FloodResult };
          if (j.started) {
            floodStart = performance.now();
            cpu0 = await processCpuMs(relay.pid);
            overflows0 = listenOverflows();
            onStarted();
          }
          if (j.result) {
            floodEnd = performance.now();
            cpu1 = await processCpuMs(relay.pid);
            overflows1 = listenOverflows();
            flood = j.result;
          }
        }
      }
    })();
    const workerErr = new Response(worker.stderr).text();
    await Promise.race([started, worker.exited]);
    await postUntil(() => flood !== undefined || worker.exitCode !== null);
    await worker.exited;
    await workerOut;
    clearTimeout(watchdog);
    if (!flood) throw new Error(`flood worker failed (exit ${worker.exitCode}): ${(await workerErr).slice(-2000)}`);
    const afterFlood = await memoryOf(relay.pid);
    const hwmAfterFlood = afterFlood?.hwm ?? NaN;
    const relayAlive = relay.exited() === null;
    if (!relayAlive) problems.push(`relay exited during the flood (code ${relay.exited()})`);

    // Let the last legitimate jobs arrive (bounded), then stop the node.
    await Promise.all([...inflight]);
    const waitUntil = performance.now() + 3_000;
    const acceptedLegit = () => [...posted.entries()].filter(([, e]) => e.status === 200);
    while (performance.now() < waitUntil && acceptedLegit().some(([m]) => !delivered.has(m))) await Bun.sleep(20);
    nodeRunning = false;
    nodeAbort.abort();
    await nodeLoop;

    // Drain the parked node and the flood's queues: everything accepted must come out intact.
    const drain = async (key: string, expected: number) => {
      const got: { marker: string; chatHistory: string }[] = [];
      let misses = 0;
      while (got.length < expected && misses < 2) {
        try {
          const r = await peers.poll(key, AbortSignal.timeout(2_000));
          if (r.items.length === 0) misses++;
          got.push(...r.items);
        } catch {
          misses++;
        }
      }
      return got;
    };
    const parkedGot = relayAlive ? await drain(parkedNode, parkedSent.size) : [];
    const parkedOk = parkedGot.filter((g) => parkedSent.get(g.marker) === g.chatHistory).length;
    let floodDelivered = 0;
    let floodCorrupted = 0;
    if (relayAlive) {
      for (const k of floodNodes) {
        const got = await drain(k, flood.acceptedByNode[k] ?? 0);
        for (const g of got) {
          const expectedLength = flood.accepted[g.marker];
          if (expectedLength === undefined) continue;
          const intact = g.chatHistory.length === expectedLength && g.chatHistory.startsWith(g.marker);
          if (intact) floodDelivered++;
          else floodCorrupted++;
        }
      }
    }
    const seen = relayAlive ? await relayCounts(relay.url) : { fivexx: {}, rejections: {}, holds: {}, guard: { forcedGc: 0, gcSeconds: 0, gcOver50ms: 0, refusals: {} } };
    const fivexx = seen.fivexx;

    sampling = false;
    await sampler;
    const code = await relay.stop();

    // Figures.
    const dispatch = (from: number, to: number) =>
      distribution([...posted.entries()].filter(([m, e]) => e.t0 >= from && e.t0 < to && delivered.has(m)).map(([m, e]) => delivered.get(m)!.at - e.t0));
    const inFlood = [...posted.entries()].filter(([, e]) => e.t0 >= floodStart && e.t0 < floodEnd);
    const legitRefused: Record<string, number> = {};
    for (const [, e] of inFlood) if (e.status !== 200 && e.status !== -1) bump(legitRefused, e.code ?? String(e.status));
    const accepted = acceptedLegit();
    const lost = accepted.filter(([m]) => !delivered.has(m)).length;
    const corrupted = accepted.filter(([m, e]) => delivered.has(m) && delivered.get(m)!.chatHistory !== e.chatHistory).length;
    const floodSamples = samples.filter((s) => s.t >= floodStart && s.t <= floodEnd);
    const dispatchFlood = dispatch(floodStart, floodEnd);
    const result: RunResult = {
      spec,
      rssBeforeBytes: rssBefore,
      rssAfterFloodBytes: afterFlood?.rss ?? NaN,
      peakRssFloodBytes: Math.max(hwmAfterFlood, ...floodSamples.map((s) => s.rss)),
      peakRssRunBytes: Math.max(...samples.map((s) => s.hwm)),
      relayCpuPercentDuringFlood: ((cpu1 - cpu0) / (floodEnd - floodStart)) * 100,
      listenOverflowsDuringFlood: overflows1 - overflows0,
      dispatchQuiet: dispatch(quietStart, floodStart),
      dispatchFlood,
      ackFlood: distribution(inFlood.filter(([, e]) => e.ackAt !== undefined).map(([, e]) => e.ackAt! - e.t0)),
      slowSamples: inFlood.filter(([m, e]) => delivered.has(m) && delivered.get(m)!.at - e.t0 >= DISPATCH_TARGET_MS).length,
      legit: { posted: inFlood.length, accepted: inFlood.filter(([, e]) => e.status === 200).length, refused: legitRefused, delivered: accepted.length - lost, lost, corrupted, errors: { ...legitErrors, ...nodeErrors } },
      parked: { accepted: parkedSent.size, delivered: parkedOk },
      flood,
      floodDelivered,
      floodCorrupted,
      relayCounts: seen,
      relayAliveAfterFlood: relayAlive,
      relayExitCode: code,
      relayLogs: relay.logs,
      floodMs: floodEnd - floodStart,
      problems,
    };
    const acceptedFlood = Object.keys(flood.accepted).length;
    if (lost > 0 || corrupted > 0) problems.push(`${lost} accepted legitimate job(s) not delivered, ${corrupted} corrupted`);
    if (parkedOk !== parkedSent.size) problems.push(`${parkedSent.size - parkedOk} job(s) queued before the flood not delivered intact`);
    if (floodDelivered !== acceptedFlood) problems.push(`${acceptedFlood - floodDelivered} of ${acceptedFlood} accepted flood job(s) not delivered intact (${floodCorrupted} corrupted)`);
    if (Object.keys(flood.violations).length > 0) problems.push(`refusals breaking the shape rule: ${JSON.stringify(flood.violations)}`);
    const other5xx = Object.entries(fivexx).filter(([s]) => s !== "503");
    if (other5xx.length > 0) problems.push(`the relay answered ${other5xx.map(([s, n]) => `${n} x ${s}`).join(", ")}`);
    if (relay.logs.error > 0) problems.push(`${relay.logs.error} error log line(s), first: ${relay.logs.firstError}`);
    if (code !== 0) problems.push(`relay exit code ${code} after SIGTERM`);
    return result;
  } catch (err) {
    sampling = false;
    await sampler;
    await relay.stop();
    throw err;
  }
}

// ============================================================================ report (main)

const mib = (b: number) => (Number.isFinite(b) ? `${(b / MiB).toFixed(0)} MiB` : "n/a");
const ms = (v: number) => (Number.isFinite(v) ? (v < 10 ? v.toFixed(2) : v.toFixed(1)) : "n/a");
const counts = (m: Record<string, number>) =>
  Object.entries(m)
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${k}: ${n.toLocaleString("en-US")}`)
    .join("; ") || "none";

const FLOOD_TITLE: Record<Protocol, Record<Kind, string>> = {
  legacy: {
    jobs: "192 x 4 MiB jobs, `/faucet`, 3 node queues",
    uploads: "200 parallel 4 MiB `/faucet` uploads",
    crowd: "1,200 clients holding `/retrieve`",
    bigkeys: "500 `/retrieve` with 1 MB keys",
  },
  v1: {
    jobs: "192 x 4 MiB `requests`, 3 node queues",
    uploads: "200 parallel 4 MiB `requests` uploads",
    crowd: "1,200 clients holding `responses/retrieve`",
    bigkeys: "500 `responses/retrieve` with 1 MB keys",
  },
};

const FLOOD_CLIENTS: Record<Kind, number> = { jobs: 16, uploads: 200, crowd: 1_200, bigkeys: 500 };
const runLabel = (r: RunResult, n: number) => `${n}. ${r.spec.protocol}: ${FLOOD_TITLE[r.spec.protocol][r.spec.kind]}`;
const fromText = (s: RunSpec) => (s.manyAddresses ? `${FLOOD_CLIENTS[s.kind].toLocaleString("en-US")} addresses` : "1 address");

function markdown(head: string[], rows: string[][]): string {
  const esc = (c: string) => c.replaceAll("|", "\\|");
  return [head, head.map(() => "---"), ...rows].map((r) => `| ${r.map(esc).join(" | ")} |`).join("\n");
}

/** Forced collections (count, mean and longest-bucket pauses) and refusals of the memory guard. */
function guardText(g: RelayCounts["guard"]): string {
  const gc = g.forcedGc > 0 ? `${g.forcedGc} forced GC (mean ${((g.gcSeconds / g.forcedGc) * 1000).toFixed(1)} ms, ${g.gcOver50ms} over 50 ms)` : "no forced GC";
  const refused = Object.keys(g.refusals).length ? `, refused: ${counts(g.refusals)}` : "";
  return gc + refused;
}

/** Two markdown tables: the figures per run, then what every party was answered. */
function report(results: RunResult[]): string {
  const figures = results.map((r, i) => {
    const s = r.spec;
    const acceptedFlood = Object.keys(r.flood.accepted).length;
    return [
      runLabel(r, i + 1),
      s.rateLimits ? "on" : "**off**",
      fromText(s),
      `${mib(r.peakRssFloodBytes)} (${((r.peakRssFloodBytes / BUDGET_BYTES) * 100).toFixed(0)}%)`,
      `${mib(r.rssBeforeBytes)} / ${mib(r.rssAfterFloodBytes)}`,
      `${r.relayCpuPercentDuringFlood.toFixed(0)}%; ${Number.isNaN(r.listenOverflowsDuringFlood) ? "n/a" : r.listenOverflowsDuringFlood.toLocaleString("en-US")}`,
      `${ms(r.dispatchFlood.p50)} / ${ms(r.dispatchFlood.p99)} ms (${r.slowSamples} of ${r.dispatchFlood.count} >= 50 ms)`,
      `${ms(r.dispatchQuiet.p50)} / ${ms(r.dispatchQuiet.p99)} ms`,
      `${r.legit.delivered}/${r.legit.delivered + r.legit.lost} legit, ${r.parked.delivered}/${r.parked.accepted} parked, ${r.floodDelivered}/${acceptedFlood} flood` +
        (r.problems.length ? `; PROBLEMS: ${r.problems.join("; ")}` : ""),
    ];
  });
  const answers = results.map((r, i) => {
    const f = r.flood;
    const none = Object.keys(f.noAnswer).length ? `; no answer (connection reset while the body was still being sent): ${counts(f.noAnswer)}` : "";
    const held = f.heldAtEnd ? `; unanswered (held or still being read) when the flood stopped: ${f.heldAtEnd.toLocaleString("en-US")}` : "";
    const holds = Object.entries(r.relayCounts.holds).filter(([k]) => /retrieve/.test(k));
    const relaySide =
      `refusals: ${counts(r.relayCounts.rejections)}` +
      (holds.length ? `; retrieve holds: ${counts(Object.fromEntries(holds.map(([k, v]) => [k.replace(/^.*retrieve /, ""), v])))}` : "") +
      `; 5xx: ${counts(r.relayCounts.fivexx)}` +
      `; memory guard: ${guardText(r.relayCounts.guard)}`;
    const legit =
      `${r.legit.accepted}/${r.legit.posted} accepted` +
      (Object.keys(r.legit.refused).length ? `, refused: ${counts(r.legit.refused)}` : "") +
      `; POST answered p50 / p99 ${ms(r.ackFlood.p50)} / ${ms(r.ackFlood.p99)} ms`;
    // Over the time the flood was sending (the job floods are done within a second or two).
    const active = Math.max(1, f.elapsedMs) / 1000;
    const rate = `${(f.bytesSent / MiB / active).toFixed(0)} MiB/s, ${Math.round(f.requests / active).toLocaleString("en-US")} req/s over ${active.toFixed(1)} s`;
    return [`${i + 1}`, `${f.requests.toLocaleString("en-US")} (${rate}): ${counts(f.answers)}${none}${held}${f.notes.length ? ` (${f.notes.join("; ")})` : ""}`, relaySide, legit];
  });
  return [
    markdown(
      ["flood", "rate limits", "flood from", "peak RSS (VmHWM) vs budget", "RSS before / after", "relay CPU; listen-queue overflows (flood window)", "dispatch p50 / p99 during the flood", "quiet p50 / p99", "accepted -> delivered"],
      figures,
    ),
    "",
    markdown(["#", "flood requests (rate sent): answers by status and code", "the relay's own count (/metrics)", "legitimate client during the flood"], answers),
  ].join("\n");
}

// ============================================================================ main

function newestSource(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestSource(p) : statSync(p).mtimeMs);
  }
  return newest;
}

async function main(): Promise<number> {
  const quick = ARGS.quick;
  const floodMs = ARGS["flood-ms"] ?? (quick ? 2_000 : 6_000);
  const quietMs = ARGS["quiet-ms"] ?? (quick ? 500 : 1_500);
  const only = ARGS.only;
  if (!existsSync(BIN)) {
    console.error(`${BIN} is missing: run npm run build first`);
    return 2;
  }
  const stale = BIN === RELAY_BIN && newestSource(join(REPO, "src")) > statSync(BIN).mtimeMs;

  const specs: RunSpec[] = [];
  for (const protocol of ["legacy", "v1"] as const) {
    for (const kind of ["jobs", "uploads"] as const) {
      specs.push({ name: `${protocol}/${kind}/rl-on`, protocol, kind, rateLimits: true, manyAddresses: false });
      specs.push({ name: `${protocol}/${kind}/rl-off`, protocol, kind, rateLimits: false, manyAddresses: false });
    }
    specs.push({ name: `${protocol}/crowd/rl-on`, protocol, kind: "crowd", rateLimits: true, manyAddresses: false });
    specs.push({ name: `${protocol}/crowd/rl-off`, protocol, kind: "crowd", rateLimits: false, manyAddresses: false });
    specs.push({ name: `${protocol}/crowd/rl-off/many`, protocol, kind: "crowd", rateLimits: false, manyAddresses: true });
    specs.push({ name: `${protocol}/bigkeys/rl-on`, protocol, kind: "bigkeys", rateLimits: true, manyAddresses: false });
    specs.push({ name: `${protocol}/bigkeys/rl-off/many`, protocol, kind: "bigkeys", rateLimits: false, manyAddresses: true });
  }
  const chosen = only ? specs.filter((s) => only.some((o) => s.name.includes(o))) : specs;

  if (PIN) Bun.spawnSync(["taskset", "-a", "-p", "-c", RELAY_CPUS, String(process.pid)], { stdout: "ignore", stderr: "ignore" });
  const facts = machineFacts();
  console.log(`tokenplace-relay floods${quick ? " (quick)" : ""}`);
  console.log(Object.entries(facts).map(([k, v]) => `${k}: ${v}`).join(" | "));
  console.log(
    `relay: ${BIN === RELAY_BIN ? "dist/tokenplace-relay-linux-x64" : BIN}${stale ? " (WARNING: older than src/, run npm run build)" : ""}; RELAY_MEMORY_BUDGET_BYTES=${BUDGET_BYTES} (${mib(BUDGET_BYTES)})${Object.keys(EXTRA_ENV).length ? `, ${Object.entries(EXTRA_ENV).map(([k, v]) => `${k}=${v}`).join(", ")}` : ""}; ` +
      `${chosen.length} runs, flood ${floodMs} ms each after a ${quietMs} ms quiet baseline; legit job every ${POST_EVERY_MS} ms; loopback only; ` +
      (PIN ? `relay and measuring process on CPU ${RELAY_CPUS}, flood generator on CPU ${FLOOD_CPUS}` : "no CPU pinning (relay, flood generator and measuring process share every core)"),
  );
  const results: RunResult[] = [];
  for (const spec of chosen) {
    console.error(`run ${spec.name}...`);
    const r = await runOne(spec, { floodMs, quietMs });
    results.push(r);
    console.error(
      `  peak RSS ${mib(r.peakRssFloodBytes)}, dispatch p50 ${ms(r.dispatchFlood.p50)} p99 ${ms(r.dispatchFlood.p99)} ms (n=${r.dispatchFlood.count}), legit POST answered p50 ${ms(r.ackFlood.p50)} p99 ${ms(r.ackFlood.p99)} ms, relay CPU ${r.relayCpuPercentDuringFlood.toFixed(0)}%, listen-queue overflows ${r.listenOverflowsDuringFlood}, ` +
        `flood ${r.flood.requests} requests: ${counts(r.flood.answers)}${Object.keys(r.flood.noAnswer).length ? `; no answer: ${counts(r.flood.noAnswer)}` : ""}` +
        `; memory guard: ${guardText(r.relayCounts.guard)}` +
        `${r.problems.length ? `\n  PROBLEMS: ${r.problems.join("; ")}` : ""}`,
    );
  }
  console.log("");
  console.log(report(results));
  console.log("");
  const peak = results.reduce((m, r) => Math.max(m, r.peakRssFloodBytes), 0);
  const worstP99 = results.reduce((m, r) => Math.max(m, Number.isFinite(r.dispatchFlood.p99) ? r.dispatchFlood.p99 : Infinity), 0);
  const over = results.filter((r) => r.peakRssFloodBytes > BUDGET_BYTES).map((r) => r.spec.name);
  const slow = results.filter((r) => !(r.dispatchFlood.p99 < DISPATCH_TARGET_MS)).map((r) => r.spec.name);
  console.log(`target: peak RSS under the ${mib(BUDGET_BYTES)} budget: ${over.length === 0 ? "met" : `NOT met in ${over.join(", ")}`} (highest ${mib(peak)})`);
  console.log(`target: dispatch p99 under ${DISPATCH_TARGET_MS} ms during every flood: ${slow.length === 0 ? "met" : `NOT met in ${slow.join(", ")}`} (worst ${ms(worstP99)} ms)`);
  const failed = results.filter((r) => r.problems.length > 0);
  console.log(`shape, crashes, losses: ${failed.length === 0 ? "no problems" : `problems in ${failed.map((r) => r.spec.name).join(", ")}`}`);
  const json = results.map((r) => ({
    ...r,
    flood: { ...r.flood, accepted: Object.keys(r.flood.accepted).length, examples: r.flood.examples },
  }));
  console.log(`BENCH_FLOODS_JSON ${JSON.stringify({ facts, budgetBytes: BUDGET_BYTES, floodMs, quietMs, results: json })}`);
  return failed.length > 0 ? 1 : 0;
}

if (ARGS.worker !== undefined) {
  await workerMain(ARGS.worker);
  process.exit(0);
} else {
  process.exit(await main());
}
