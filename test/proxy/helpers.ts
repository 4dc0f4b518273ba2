import { connect } from "node:net";
import type { Subprocess } from "bun";
import { BUN, ROOT, spawnRelay, type Spawned } from "../helpers/spawn.ts";

export interface Fixture {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  port: number;
  rawPort: number;
  url: string;
  state(id: string): Promise<{ sent: number; aborted: boolean; done: boolean }>;
  requests(): Promise<string[]>;
  stop(): Promise<void>;
}

/** Starts test/proxy/fixtures/upstream.ts as its own process and waits for its port line. */
export async function startFixture(): Promise<Fixture> {
  const proc = Bun.spawn([BUN, "run", `${ROOT}test/proxy/fixtures/upstream.ts`], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const reader = proc.stdout.getReader();
  let text = "";
  const deadline = Date.now() + 15_000;
  while (!text.includes("\n")) {
    if (Date.now() > deadline) throw new Error("fixture did not start");
    const { done, value } = await reader.read();
    if (done) throw new Error(`fixture exited: ${await new Response(proc.stderr).text()}`);
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  // Keep draining so a chatty child never blocks on a full pipe.
  void (async () => {
    for await (const _ of proc.stdout) void _;
  })().catch(() => {});
  const { port, rawPort } = JSON.parse(text.slice(0, text.indexOf("\n"))) as { port: number; rawPort: number };
  const url = `http://127.0.0.1:${port}`;
  return {
    proc,
    port,
    rawPort,
    url,
    state: async (id) => (await fetch(`${url}/__ctl/state?id=${id}`)).json() as Promise<{ sent: number; aborted: boolean; done: boolean }>,
    // Control requests are left out: they are the test talking to the fixture, not proxied traffic.
    requests: async () => ((await (await fetch(`${url}/__ctl/requests`)).json()) as string[]).filter((r) => !r.includes("/__ctl/")),
    stop: async () => {
      proc.kill("SIGKILL");
      await proc.exited;
    },
  };
}

/** The relay as its own process in proxy mode (LOG_LEVEL=info: the helper waits for "listening"). */
export function startProxyRelay(upstream: string, env: Record<string, string> = {}): Promise<Spawned> {
  return spawnRelay({
    TOKENPLACE_RELAY_UPSTREAM_URL: upstream,
    LOG_LEVEL: "info",
    BUN_CONFIG_MAX_HTTP_REQUESTS: "1024",
    ...env,
  });
}

export interface SseEvent {
  i: number;
  sentAt: number;
  arrivedAt: number;
}

/** Wall-clock milliseconds with sub-ms precision, comparable across processes on one machine. */
export const now = () => performance.timeOrigin + performance.now();

/** Reads SSE `data:` payloads ({"i","sentAt"}) as they arrive; `onEvent` may stop early by returning true. */
export async function readEvents(res: Response, onEvent?: (e: SseEvent, all: SseEvent[]) => boolean | void | Promise<boolean | void>): Promise<{ events: SseEvent[]; error?: unknown }> {
  const events: SseEvent[] = [];
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return { events };
      buf += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const data = block.split("\n").find((l) => l.startsWith("data: "));
        if (!data) continue;
        const e = { ...(JSON.parse(data.slice(6)) as { i: number; sentAt: number }), arrivedAt: now() };
        events.push(e);
        if (await onEvent?.(e, events)) {
          await reader.cancel().catch(() => {});
          return { events };
        }
      }
    }
  } catch (error) {
    return { events, error };
  }
}

export interface RawResponse {
  status: number;
  head: string;
  headers: Record<string, string>;
  body: string;
}

/**
 * Sends bytes exactly as given over a fresh TCP connection and reads one response: until its
 * Content-Length or final chunk is in, or the server closes (keep-alive is not waited out).
 */
export function rawRequest(port: number, text: string, timeoutMs = 10_000): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, "127.0.0.1", () => sock.write(text));
    const parts: Buffer[] = [];
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(parseRaw(Buffer.concat(parts).toString("latin1")));
    };
    const timer = setTimeout(() => {
      settled = true;
      sock.destroy();
      reject(new Error("raw request timed out"));
    }, timeoutMs);
    sock.on("data", (d: Buffer) => {
      parts.push(d);
      if (isComplete(Buffer.concat(parts).toString("latin1"))) finish();
    });
    sock.on("error", () => {});
    sock.on("close", finish);
  });
}

function isComplete(all: string): boolean {
  const split = all.indexOf("\r\n\r\n");
  if (split < 0) return false;
  const r = parseRaw(all);
  if (r.headers["transfer-encoding"] === "chunked") return /(^|\r\n)0\r\n\r\n$/.test(all.slice(split + 4));
  const length = r.headers["content-length"];
  return length !== undefined && Buffer.byteLength(all.slice(split + 4), "latin1") >= Number(length);
}

function parseRaw(all: string): RawResponse {
  const split = all.indexOf("\r\n\r\n");
  const head = split >= 0 ? all.slice(0, split) : all;
  const headers: Record<string, string> = {};
  for (const line of head.split("\r\n").slice(1)) {
    const i = line.indexOf(":");
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  const status = Number(head.split(" ")[1] ?? 0);
  let body = split >= 0 ? all.slice(split + 4) : "";
  if (headers["transfer-encoding"] === "chunked") body = unchunk(body);
  return { status, head, headers, body };
}

function unchunk(s: string): string {
  let out = "";
  let rest = s;
  for (;;) {
    const nl = rest.indexOf("\r\n");
    if (nl < 0) return out;
    const size = parseInt(rest.slice(0, nl), 16);
    if (!size) return out;
    out += rest.slice(nl + 2, nl + 2 + size);
    rest = rest.slice(nl + 2 + size + 2);
  }
}

/** A GET as raw bytes, closing the connection afterwards. */
export const rawGet = (target: string, host = "relay.example", extra = "") =>
  `GET ${target} HTTP/1.1\r\nHost: ${host}\r\n${extra}Connection: close\r\n\r\n`;

/** Reads one metric sample (sum over matching label sets) from a Prometheus text scrape. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const set = m[2] ?? "";
    if (Object.entries(labels).every(([k, v]) => set.includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}

/** Polls `check` until it returns true or `timeoutMs` passes. */
export async function eventually(check: () => Promise<boolean> | boolean, timeoutMs = 5_000, everyMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await Bun.sleep(everyMs);
  }
  return check();
}
