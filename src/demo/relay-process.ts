/**
 * Starts a server script (the relay, or the benchmark's baseline) as a child Bun process on an
 * ephemeral loopback port and learns the port from its `"msg":"listening"` JSON log line.
 * Used by `npm run demo`, the demo tests and the benchmark.
 */
import { fileURLToPath } from "node:url";
import type { Subprocess } from "bun";

export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));

export interface ChildServer {
  url: string;
  port: number;
  pid: number;
  /** Every stdout/stderr line seen so far (for diagnostics when something fails). */
  output: string[];
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. Idempotent. */
  stop(graceMs?: number): Promise<void>;
}

export interface SpawnOptions {
  /** Script path relative to the repository root, e.g. "src/main.ts". */
  script: string;
  env?: Record<string, string>;
  startTimeoutMs?: number;
}

/** Environment for a relay child: broker only, loopback, quiet logs (no per-request lines). */
export function relayEnv(extra: Record<string, string> = {}): Record<string, string> {
  return { RELAY_PORT: "0", RELAY_HOST: "127.0.0.1", TOKENPLACE_RELAY_ONLY: "true", LOG_LEVEL: "warn", ...extra };
}

/** The relay logs its "listening" line at any level but silent, so the port always comes from it. */
export function startRelay(extra: Record<string, string> = {}, startTimeoutMs?: number): Promise<ChildServer> {
  return spawnServer({ script: "src/main.ts", env: relayEnv(extra), ...(startTimeoutMs ? { startTimeoutMs } : {}) });
}

/** Reads a pipe line by line until it closes; never rejects. */
export async function pumpLines(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> {
  const decoder = new TextDecoder();
  let pending = "";
  try {
    for await (const part of stream) {
      pending += decoder.decode(part, { stream: true });
      let nl: number;
      while ((nl = pending.indexOf("\n")) >= 0) {
        onLine(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
      }
    }
  } catch {
    // The child died mid-read: its exit code tells the story.
  }
  if (pending) onLine(pending);
}

function listeningPort(line: string): number | undefined {
  if (!line.includes('"listening"')) return undefined;
  try {
    const rec = JSON.parse(line) as { msg?: unknown; port?: unknown };
    return rec.msg === "listening" && typeof rec.port === "number" ? rec.port : undefined;
  } catch {
    return undefined;
  }
}

export async function spawnServer(opts: SpawnOptions): Promise<ChildServer> {
  const output: string[] = [];
  const proc: Subprocess<"ignore", "pipe", "pipe"> = Bun.spawn([process.execPath, "run", opts.script], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...opts.env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  let resolvePort!: (port: number) => void;
  const portSeen = new Promise<number>((r) => (resolvePort = r));
  const remember = (line: string) => {
    if (output.length < 500) output.push(line);
    const port = listeningPort(line);
    if (port !== undefined) resolvePort(port);
  };
  // Keep draining both pipes for the child's whole life so a chatty child never blocks on a full pipe.
  void pumpLines(proc.stdout, remember);
  void pumpLines(proc.stderr, remember);

  let stopping: Promise<void> | undefined;
  const stop = (graceMs = 3_000): Promise<void> =>
    (stopping ??= (async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill("SIGTERM");
      let timer: ReturnType<typeof setTimeout> | undefined;
      const killed = new Promise<void>((r) => {
        timer = setTimeout(() => {
          proc.kill("SIGKILL");
          r();
        }, graceMs);
      });
      await Promise.race([proc.exited.then(() => undefined), killed]);
      clearTimeout(timer);
      await proc.exited;
    })());

  const timeoutMs = opts.startTimeoutMs ?? 15_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    portSeen,
    proc.exited.then((code) => `exited with code ${code}`),
    new Promise<string>((r) => (timer = setTimeout(() => r(`no "listening" line within ${timeoutMs} ms`), timeoutMs))),
  ]);
  clearTimeout(timer);
  if (typeof outcome === "string") {
    await stop(500);
    throw new Error(`${opts.script} ${outcome}; output:\n${output.slice(-20).join("\n")}`);
  }
  return { url: `http://127.0.0.1:${outcome}`, port: outcome, pid: proc.pid, output, stop };
}
