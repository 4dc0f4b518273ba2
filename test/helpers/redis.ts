import type { Subprocess } from "bun";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const IS_CI = process.env.CI === "true";

/** Path of redis-server, or undefined (Debian package redis-server; .ci/run installs it). */
export function redisServerPath(): string | undefined {
  for (const dir of [...(process.env.PATH ?? "").split(":"), "/usr/bin", "/usr/sbin", "/usr/local/bin"]) {
    if (dir && existsSync(join(dir, "redis-server"))) return join(dir, "redis-server");
  }
  return undefined;
}

/**
 * Why Redis-backed tests cannot run, or undefined. Under CI=true a missing server is not a reason
 * to skip: callers then run the tests and they fail, naming what is missing.
 */
export function redisSkipReason(what: string): string | undefined {
  if (redisServerPath() || IS_CI) return undefined;
  const reason = "redis-server is not installed (apt-get install redis-server, or scripts/install-system-deps.sh)";
  console.warn(`SKIP ${what}: ${reason}`);
  return reason;
}

export interface RedisServer {
  port: number;
  url: string;
  proc: Subprocess;
  /** SIGKILL (a crash); start() again brings it back on the same port, with what AOF kept. */
  kill(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = s.port;
  s.stop(true);
  return port;
}

/** A private redis-server on a loopback port, with its own data directory (AOF on, so a restart keeps state). */
export async function startRedis(opts: { persist?: boolean } = {}): Promise<RedisServer> {
  const bin = redisServerPath();
  if (!bin) throw new Error("redis-server is not installed (apt-get install redis-server, or scripts/install-system-deps.sh)");
  const dir = mkdtempSync(join(tmpdir(), "relay-redis-"));
  const port = await freePort();
  let proc!: Subprocess;
  const start = async () => {
    const args = [bin, "--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--daemonize", "no", "--protected-mode", "yes"];
    args.push("--appendonly", opts.persist === false ? "no" : "yes", "--appendfsync", "always");
    proc = Bun.spawn(args, { stdout: "pipe", stderr: "pipe" });
    const reader = proc.stdout as ReadableStream<Uint8Array>;
    const decoder = new TextDecoder();
    let seen = "";
    const deadline = Date.now() + 10_000;
    for await (const chunk of reader) {
      seen += decoder.decode(chunk);
      if (seen.includes("Ready to accept connections")) break;
      if (Date.now() > deadline) throw new Error(`redis-server did not start:\n${seen}`);
    }
    if (!seen.includes("Ready to accept connections")) throw new Error(`redis-server exited:\n${seen}`);
    // Keep draining its output so it never blocks on a full pipe.
    (async () => {
      for await (const _ of reader) void _;
    })().catch(() => {});
  };
  await start();
  const server: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    get proc() {
      return proc;
    },
    async kill() {
      proc.kill("SIGKILL");
      await proc.exited;
    },
    start,
    async stop() {
      proc.kill("SIGTERM");
      await proc.exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return server;
}
