/**
 * Shared plumbing for the container-contract tests (test/container/*.test.ts): locating the
 * compiled binaries and system tools, spawning a relay on an ephemeral port and waiting for its
 * `listening` log line, bounded HTTP polling, and always cleaning up child processes.
 *
 * Missing prerequisites (a binary not built, bwrap, qemu-aarch64, the arm64 libc) fail loudly
 * when CI=true and are skipped with a visible message otherwise.
 */
import { afterAll, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const ROOT = resolve(import.meta.dir, "../..");
export const DIST = join(ROOT, "dist");
export const X64 = join(DIST, "tokenplace-relay-linux-x64");
export const ARM64 = join(DIST, "tokenplace-relay-linux-arm64");
export const IS_CI = process.env.CI === "true";
/** Where the arm64 glibc lives (Debian's libc6-arm64-cross): qemu-aarch64 -L uses it as the sysroot. */
export const ARM64_SYSROOT = "/usr/aarch64-linux-gnu";
export const INSTALL_HINT = "run scripts/install-system-deps.sh (as root)";

/** Absolute path of an executable on PATH (or in the usual system dirs), or undefined. */
export function which(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(":"), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];
  for (const d of dirs) {
    if (!d) continue;
    const p = join(d, name);
    if (existsSync(p)) return p;
  }
  return undefined;
}

export interface Gate {
  readonly ok: boolean;
  readonly what: string;
  readonly problems: readonly string[];
}

/** Collects a test group's missing prerequisites; prints the skip notice once (outside CI). */
export function gate(what: string, problems: (string | false | undefined)[]): Gate {
  const real = problems.filter((p): p is string => typeof p === "string" && p.length > 0);
  const g: Gate = { ok: real.length === 0, what, problems: real };
  if (!g.ok && !IS_CI) console.warn(`SKIP ${what}: ${real.join("; ")}`);
  return g;
}

export function binaryProblem(path: string): string | undefined {
  return existsSync(path) ? undefined : `${path} is not built (npm run build)`;
}

/**
 * `test` that runs only when the gate is open. With CI=true a closed gate turns into a failing
 * test that names what is missing, so CI can never pass by skipping the container contract.
 */
export function gatedTest(g: Gate, name: string, fn: () => Promise<void> | void, timeoutMs?: number): void {
  if (g.ok) test(name, fn, timeoutMs);
  else if (IS_CI)
    test(name, () => {
      throw new Error(`${g.what} cannot run in CI: ${g.problems.join("; ")}`);
    });
  else test.skip(`${name} [skipped: ${g.problems.join("; ")}]`, () => {});
}

// ------------------------------------------------------------------------------ processes

const live = new Set<Spawned>();

/** Kills every child still running; call from each file's afterAll (see `cleanupAfterAll`). */
export async function killAll(): Promise<void> {
  await Promise.all([...live].map((p) => p.stop()));
}
export function cleanupAfterAll(): void {
  afterAll(killAll);
}

export interface SpawnOptions {
  env?: Record<string, string>;
  cwd?: string;
}

/** A child process whose stdout/stderr are collected as text while it runs. */
export class Spawned {
  readonly proc: Bun.Subprocess<"ignore", "pipe", "pipe">;
  stdout = "";
  stderr = "";
  private readonly drained: Promise<void>;
  private onOutput: (() => void) | undefined;

  constructor(
    readonly cmd: string[],
    opts: SpawnOptions = {},
  ) {
    this.proc = Bun.spawn(cmd, {
      env: opts.env ?? {},
      cwd: opts.cwd ?? ROOT,
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
    live.add(this);
    this.drained = Promise.all([this.pump(this.proc.stdout, "stdout"), this.pump(this.proc.stderr, "stderr")]).then(() => {});
    void this.proc.exited.then(() => live.delete(this));
  }

  private async pump(stream: ReadableStream<Uint8Array>, key: "stdout" | "stderr"): Promise<void> {
    const dec = new TextDecoder();
    try {
      for await (const chunk of stream) {
        this[key] += dec.decode(chunk, { stream: true });
        this.onOutput?.();
      }
    } catch {
      // stream torn down with the process
    }
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Exit code, or 128+signal like a shell reports it. */
  get status(): number | null {
    if (this.proc.exitCode !== null) return this.proc.exitCode;
    const sig = this.proc.signalCode;
    if (sig !== null) return 128 + (typeof sig === "number" ? sig : (SIGNALS[sig] ?? 0));
    return null;
  }

  /** Waits for exit (bounded); returns the shell-style status and the collected output. */
  async wait(timeoutMs: number): Promise<{ status: number; signal: string | null; stdout: string; stderr: string; ms: number }> {
    const t0 = performance.now();
    let handle: ReturnType<typeof setTimeout> | undefined;
    const timer = new Promise<"timeout">((r) => (handle = setTimeout(() => r("timeout"), timeoutMs)));
    const res = await Promise.race([this.proc.exited, timer]);
    clearTimeout(handle);
    if (res === "timeout") {
      await this.stop();
      throw new Error(`${this.cmd.join(" ")} did not exit within ${timeoutMs} ms\nstderr:\n${tail(this.stderr)}`);
    }
    await withTimeout(this.drained, 5_000).catch(() => {});
    return { status: this.status ?? -1, signal: this.proc.signalCode === null ? null : String(this.proc.signalCode), stdout: this.stdout, stderr: this.stderr, ms: performance.now() - t0 };
  }

  /**
   * Resolves with the port from the relay's `{"msg":"listening","port":N}` log line. Rejects if
   * the process exits first or the deadline passes, with its stderr in the message.
   */
  waitListening(timeoutMs: number): Promise<number> {
    return new Promise<number>((resolvePort, reject) => {
      const done = (fn: () => void) => {
        clearTimeout(timer);
        this.onOutput = undefined;
        fn();
      };
      const check = () => {
        const port = listeningPort(this.stdout);
        if (port !== undefined) done(() => resolvePort(port));
      };
      const timer = setTimeout(
        () => done(() => reject(new Error(`no "listening" line within ${timeoutMs} ms from ${this.cmd.join(" ")}\nstdout:\n${tail(this.stdout)}\nstderr:\n${tail(this.stderr)}`))),
        timeoutMs,
      );
      this.onOutput = check;
      void this.proc.exited.then(async () => {
        await withTimeout(this.drained, 5_000).catch(() => {});
        check();
        if (this.onOutput)
          done(() => reject(new Error(`${this.cmd.join(" ")} exited (status ${this.status}, signal ${this.proc.signalCode}) before listening\nstdout:\n${tail(this.stdout)}\nstderr:\n${tail(this.stderr)}`)));
      });
      check();
    });
  }

  /** SIGTERM, then SIGKILL after a bounded grace period. Idempotent. */
  async stop(graceMs = 5_000): Promise<void> {
    if (this.running) {
      this.proc.kill("SIGTERM");
      const exited = await Promise.race([this.proc.exited.then(() => true), Bun.sleep(graceMs).then(() => false)]);
      if (!exited) {
        this.proc.kill("SIGKILL");
        await withTimeout(this.proc.exited, 5_000).catch(() => {});
      }
    }
    live.delete(this);
  }
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGILL: 4, SIGTRAP: 5, SIGABRT: 6, SIGBUS: 7, SIGFPE: 8, SIGKILL: 9, SIGSEGV: 11, SIGPIPE: 13, SIGTERM: 15 };

/** Port from the first JSON log line with msg "listening" and a numeric port. */
export function listeningPort(stdout: string): number | undefined {
  for (const line of stdout.split("\n")) {
    if (!line.includes("listening")) continue;
    try {
      const rec = JSON.parse(line) as { msg?: unknown; port?: unknown };
      if (rec.msg === "listening" && typeof rec.port === "number" && rec.port > 0) return rec.port;
    } catch {
      // not a JSON line
    }
  }
  return undefined;
}

/** Runs a command to completion with a bounded wait. */
export async function run(cmd: string[], opts: SpawnOptions & { timeoutMs?: number } = {}) {
  return new Spawned(cmd, opts).wait(opts.timeoutMs ?? 30_000);
}

export function tail(s: string, n = 2_000): string {
  return s.length > n ? `...${s.slice(-n)}` : s;
}

export async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** GET with a per-request timeout; returns status and parsed JSON (or undefined). */
export async function getJson(url: string, timeoutMs = 5_000): Promise<{ status: number; body: unknown; text: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  return { status: res.status, body, text };
}

/** A fresh temp dir, removed by the returned function. */
export function tempDir(prefix: string): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

// ------------------------------------------------------------------------- /proc inspection

export interface ProcInfo {
  pid: number;
  ppid: number;
  name: string;
  uid: number[];
  gid: number[];
  capEff: string;
  noNewPrivs: string | undefined;
}

export function procInfo(pid: number): ProcInfo | undefined {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    return undefined;
  }
  const field = (k: string) => status.match(new RegExp(`^${k}:\\s*(.*)$`, "m"))?.[1]?.trim();
  return {
    pid,
    ppid: Number(field("PPid")),
    name: field("Name") ?? "",
    uid: (field("Uid") ?? "").split(/\s+/).map(Number),
    gid: (field("Gid") ?? "").split(/\s+/).map(Number),
    capEff: field("CapEff") ?? "",
    noNewPrivs: field("NoNewPrivs"),
  };
}

/** The process and all its descendants (scans /proc). */
export function processTree(rootPid: number): ProcInfo[] {
  const all: ProcInfo[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    const p = procInfo(Number(d));
    if (p) all.push(p);
  }
  const out: ProcInfo[] = [];
  const want = new Set([rootPid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const p of all) {
      if (!want.has(p.pid) && want.has(p.ppid)) {
        want.add(p.pid);
        grew = true;
      }
    }
  }
  for (const p of all) if (want.has(p.pid)) out.push(p);
  return out;
}

/** A TCP port nothing listens on (bound, then released). */
export async function deadPort(): Promise<number> {
  const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = s.port;
  s.stop(true);
  return port;
}
