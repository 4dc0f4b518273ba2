/**
 * The unmodified upstream token.place peers (server.py + client.py) and upstream relay.py, as
 * shipped in ../shared/peers beside the repository (read its README.md). Used by `npm run bench:v1`
 * and test/v1/peers.test.ts. The peers are a fixture: they are run, never copied or modified.
 */
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";

export const REPO = resolve(import.meta.dir, "..");
/** shared/ sits beside the repository, both here and in CI (read-only there); TOKENPLACE_PEERS_DIR moves it. */
export const PEERS_DIR = resolve(REPO, process.env.TOKENPLACE_PEERS_DIR ?? "../shared/peers");
export const E2E_SCRIPT = join(PEERS_DIR, "tokenplace-e2e.sh");
export const UPSTREAM_SCRIPT = join(PEERS_DIR, "start-upstream-relay.sh");
/** Where the peers' scripts keep their venv (they build it from PyPI on first use, ~30-60 s). */
export const VENV = process.env.TP_VENV ?? "/tmp/tp-e2e-venv";
/**
 * The compiled relay (npm run build); `TOKENPLACE_BENCH_RELAY_BIN` names another build (e.g. one made
 * with `scripts/build.ts --outdir`) so two builds can be measured without sharing dist/.
 */
export const RELAY_BIN = process.env.TOKENPLACE_BENCH_RELAY_BIN ? resolve(process.env.TOKENPLACE_BENCH_RELAY_BIN) : join(REPO, "dist/tokenplace-relay-linux-x64");

const PY_OK = "import sys, venv; sys.exit(0 if sys.version_info >= (3, 11) else 1)";

function pythonOk(cmd: string): boolean {
  try {
    return Bun.spawnSync([cmd, "-c", PY_OK], { stdout: "ignore", stderr: "ignore" }).exitCode === 0;
  } catch {
    return false; // not installed
  }
}

/**
 * What keeps the real peers from running here, or [] when nothing does: the peers directory and
 * a Python >= 3.11 (an already built venv counts; otherwise an interpreter to build it with, picked
 * like peers-lib.sh does).
 */
export function peersProblems(): string[] {
  const problems: string[] = [];
  for (const f of [E2E_SCRIPT, UPSTREAM_SCRIPT, join(PEERS_DIR, "token.place/server.py")]) {
    if (!existsSync(f)) {
      problems.push(`${f} is missing (the peers live in ../shared/peers beside the repository)`);
      break;
    }
  }
  const venvPython = join(VENV, "bin/python");
  const candidates = [process.env.TP_PYTHON, "python3.12", "python3.11", "python3.13", "python3"].filter((c): c is string => !!c);
  if (!(existsSync(venvPython) && pythonOk(venvPython)) && !candidates.some(pythonOk)) {
    problems.push("no python >= 3.11 with venv (python3.11+ or TP_PYTHON) to run the token.place peers");
  }
  return problems;
}

export interface E2EResult {
  code: number;
  stdout: string;
  stderr: string;
  ok: number;
  rounds: number;
  /** Median round trip in seconds, as the script computed it; NaN when it printed no summary. */
  medianS: number;
  /** Per-round seconds in order ("round i: X.XXXs ok|..."). */
  roundSeconds: number[];
  summary: string;
}

/**
 * `tokenplace-e2e.sh <port> <rounds> [token]`: the real server.py (mock LLM) registers with the
 * relay on 127.0.0.1:<port> and client.py runs `rounds` back-to-back round trips through it.
 * Bounded: SIGTERM at `timeoutMs` (the script then stops its node), SIGKILL 15 s later.
 */
export async function runTokenplaceE2E(port: number, rounds: number, token: string | undefined, opts: { timeoutMs?: number; env?: Record<string, string> } = {}): Promise<E2EResult> {
  const args = ["bash", E2E_SCRIPT, String(port), String(rounds), ...(token ? [token] : [])];
  const proc = Bun.spawn(args, { cwd: PEERS_DIR, env: { ...process.env, ...opts.env }, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  let kill: ReturnType<typeof setTimeout> | undefined;
  const term = setTimeout(() => {
    proc.kill("SIGTERM");
    kill = setTimeout(() => proc.kill("SIGKILL"), 15_000);
  }, opts.timeoutMs ?? rounds * 95_000 + 120_000);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(term);
  clearTimeout(kill);
  const m = /(\d+)\/(\d+) round trips ok; median latency ([\d.]+)s/.exec(stdout);
  const roundSeconds = [...stdout.matchAll(/^round \d+: ([\d.]+)s/gm)].map((r) => Number(r[1]));
  return {
    code,
    stdout,
    stderr,
    ok: m ? Number(m[1]) : 0,
    rounds: m ? Number(m[2]) : rounds,
    medianS: m ? Number(m[3]) : NaN,
    roundSeconds,
    summary: m?.[0] ?? "(no summary line)",
  };
}

/** A free loopback TCP port (bind 0, release). */
export function freePort(): Promise<number> {
  return new Promise((resolveP, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolveP(port));
    });
  });
}

export interface UpstreamRelay {
  pid: number;
  port: number;
  url: string;
  log: string;
  /** SIGTERM to that one pid, SIGKILL after 5 s; resolves once it is gone. */
  stop(): Promise<void>;
}

/** Whether a process with this pid still exists (signal 0 checks without signalling). */
export const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/**
 * `start-upstream-relay.sh <port> [token]`: upstream relay.py (mock LLM), detached; we stop it by
 * its pid. `relayEnv` goes to relay.py through the script's TP_RELAY_ENV (e.g. its legacy routes).
 */
export async function startUpstreamRelay(token: string | undefined, relayEnv: Record<string, string> = {}): Promise<UpstreamRelay> {
  const port = await freePort();
  const proc = Bun.spawn(["bash", UPSTREAM_SCRIPT, String(port), ...(token ? [token] : [])], {
    cwd: PEERS_DIR,
    env: { ...process.env, ...(Object.keys(relayEnv).length > 0 ? { TP_RELAY_ENV: Object.entries(relayEnv).map(([k, v]) => `${k}=${v}`).join(" ") } : {}) },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const timer = setTimeout(() => proc.kill("SIGKILL"), 240_000); // first use builds the venv
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  const m = /relay pid (\d+) port (\d+) log (\S+)/.exec(stdout);
  if (code !== 0 || !m) throw new Error(`start-upstream-relay.sh exited ${code}: ${stdout}${stderr}`.trim());
  const pid = Number(m[1]);
  const stop = async () => {
    if (!alive(pid)) return;
    process.kill(pid, "SIGTERM");
    for (let i = 0; i < 50 && alive(pid); i++) await Bun.sleep(100);
    if (alive(pid)) process.kill(pid, "SIGKILL");
  };
  return { pid, port, url: `http://127.0.0.1:${port}`, log: m[3]!, stop };
}
