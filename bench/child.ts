/**
 * Child processes for the benchmarks: servers that log a `"msg":"listening"` line, and servers
 * started on a chosen port and judged ready by their `/healthz` (the relay with its default
 * request logging going to a file, as it would in a container), optionally with a raised
 * open-file limit (thousands of held sockets need more than the usual 1,024).
 */
import type { Subprocess } from "bun";
import { closeSync, existsSync, openSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { pumpLines } from "../src/demo/relay-process.ts";
import { REPO } from "./peers.ts";


export interface Child {
  url: string;
  port: number;
  pid: number;
  output: string[];
  stop(): Promise<void>;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code (-1: killed by a signal before). */
export async function stopChild(proc: Pick<Subprocess, "exitCode" | "signalCode" | "exited" | "kill">, graceMs: number): Promise<number> {
  if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode ?? -1;
  proc.kill("SIGTERM");
  const t = setTimeout(() => proc.kill("SIGKILL"), graceMs);
  const code = await proc.exited;
  clearTimeout(t);
  return code;
}

/** The port a child logged in its "listening" line, or why it did not within 15 s (it exited, or it is silent). */
export async function listeningOrWhyNot(port: Promise<number>, exited: Promise<number>): Promise<number | string> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const got = await Promise.race([
    port,
    exited.then((c) => `exited with ${c}`),
    new Promise<string>((r) => (timer = setTimeout(() => r("no listening line within 15 s"), 15_000))),
  ]);
  clearTimeout(timer);
  return got;
}

/** Spawns a server that logs a `"msg":"listening"` JSON line with its port; exact env, nothing inherited but PATH. */
export async function spawnListening(cmd: string[], env: Record<string, string>): Promise<Child> {
  const proc = Bun.spawn(cmd, { cwd: REPO, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env }, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const output: string[] = [];
  let onPort!: (p: number) => void;
  const port = new Promise<number>((r) => (onPort = r));
  const onLine = (line: string) => {
    if (output.length < 200) output.push(line);
    if (line.includes('"listening"')) {
      try {
        const p = (JSON.parse(line) as { port?: unknown }).port;
        if (typeof p === "number") onPort(p);
      } catch {}
    }
  };
  void pumpLines(proc.stdout, onLine);
  void pumpLines(proc.stderr, onLine);
  const stop = async () => {
    await stopChild(proc, 3_000);
  };
  const got = await listeningOrWhyNot(port, proc.exited);
  if (typeof got === "string") {
    await stop();
    throw new Error(`${cmd.join(" ")} ${got}:\n${output.slice(-20).join("\n")}`);
  }
  return { url: `http://127.0.0.1:${got}`, port: got, pid: proc.pid, output, stop };
}

/** "0.1.0 (revision abc123)" from a relay's listening line, if it logged one. */
export function revisionOf(c: Child | undefined): string | undefined {
  const line = c?.output.find((l) => l.includes('"listening"'));
  try {
    const j = line ? (JSON.parse(line) as { version?: unknown; revision?: unknown }) : undefined;
    return j && typeof j.version === "string" ? `${j.version} (revision ${String(j.revision)})` : undefined;
  } catch {
    return undefined;
  }
}

/** A server started on a chosen port, ready once `GET <readyPath>` answers 200. */
export interface Server {
  name: string;
  url: string;
  port: number;
  pid: number;
  /** Where its stdout and stderr go (the relay's request log at its default level). */
  logFile: string;
  /** Milliseconds from spawn to the first 200 on the ready path (1 ms polling). */
  readyMs: number;
  stop(): Promise<void>;
}

/** Open files the servers may need: 10,000 proxied streams are 20,000 sockets in the relay. */
export const BENCH_FD_LIMIT = 65_536;

/** The open-file limit a child can raise itself to here (the hard limit, unless root may go beyond). */
export function reachableFdLimit(): number {
  const r = Bun.spawnSync(["bash", "-c", `ulimit -n ${BENCH_FD_LIMIT} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; ulimit -n`], { stdout: "pipe" });
  const n = Number(r.stdout.toString().trim());
  return Number.isFinite(n) && n > 0 ? n : 1_024;
}

/**
 * Runs `cmd` under bash with the open-file limit raised to `fdLimit` (or to the hard limit when
 * that is lower and we are not root); `exec` keeps the pid, so stopping it stops the server.
 */
export function withFdLimit(cmd: string[], fdLimit = BENCH_FD_LIMIT): string[] {
  return ["bash", "-c", `ulimit -n ${fdLimit} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"`, "bench", ...cmd];
}

export interface StartOptions {
  name: string;
  cmd: string[];
  env: Record<string, string>;
  port: number;
  logDir: string;
  readyPath?: string;
  timeoutMs?: number;
  /** Environment beyond PATH to inherit (default none: the servers see only what the bench sets). */
  inherit?: boolean;
}

/** Spawns a server on a known port and polls its ready path every millisecond until it answers 200. */
export async function startOnPort(o: StartOptions): Promise<Server> {
  const logFile = join(o.logDir, `${o.name.replace(/[^a-z0-9]+/gi, "-")}-${o.port}.log`);
  const env = { ...(o.inherit ? process.env : { PATH: process.env.PATH ?? "/usr/bin:/bin" }), ...o.env } as Record<string, string>;
  const t0 = performance.now();
  // One append-mode descriptor for both streams, so stderr (a crash report) never overwrites stdout.
  const fd = openSync(logFile, "a");
  const proc = Bun.spawn(o.cmd, { cwd: REPO, env, stdin: "ignore", stdout: fd, stderr: fd });
  closeSync(fd);
  const url = `http://127.0.0.1:${o.port}`;
  const stop = async () => {
    await stopChild(proc, 5_000);
  };
  const deadline = t0 + (o.timeoutMs ?? 20_000);
  while (performance.now() < deadline) {
    if (proc.exitCode !== null || proc.signalCode !== null) break;
    try {
      const res = await fetch(`${url}${o.readyPath ?? "/healthz"}`, { signal: AbortSignal.timeout(1_000) });
      await res.arrayBuffer();
      if (res.status === 200) return { name: o.name, url, port: o.port, pid: proc.pid, logFile, readyMs: performance.now() - t0, stop };
    } catch {
      // not listening yet
    }
    await Bun.sleep(1);
  }
  await stop();
  const log = existsSync(logFile) ? readFileSync(logFile, "utf8").split("\n").slice(-20).join("\n") : "";
  throw new Error(`${o.name} (${o.cmd.join(" ")}) was not ready on ${url}: ${proc.exitCode !== null ? `exited ${proc.exitCode}` : "timed out"}\n${log}`);
}

/** The relay's version and revision from its listening log line, if it logged one. */
export function revisionFromLog(logFile: string): string | undefined {
  try {
    const line = readFileSync(logFile, "utf8").split("\n").find((l) => l.includes('"listening"'));
    const j = line ? (JSON.parse(line) as { version?: unknown; revision?: unknown }) : undefined;
    return j && typeof j.version === "string" ? `${j.version} (revision ${String(j.revision)})` : undefined;
  } catch {
    return undefined;
  }
}

/** Resident set size of a process in bytes (VmRSS from /proc, Linux). */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}
