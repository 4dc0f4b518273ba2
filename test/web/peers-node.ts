/**
 * The UNMODIFIED upstream compute node (../shared/peers/token.place/server.py, mock LLM) as a
 * child of a test, started exactly as ../shared/peers/tokenplace-e2e.sh starts it: the peers'
 * own venv (built by peers-lib.sh's tp_prepare on first use), a scrubbed environment pinned to
 * one relay, its own HOME. Stopped by its pid with SIGINT first, so it unregisters from the relay.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PEERS_DIR, alive, freePort } from "../../bench/peers.ts";

export interface PeersPython {
  python: string;
  src: string;
}

/** Runs peers-lib.sh's tp_prepare (builds the venv from PyPI the first time, ~30-60 s). */
export async function preparePeers(): Promise<PeersPython> {
  const proc = Bun.spawn(["bash", "-c", '. ./peers-lib.sh && tp_prepare >&2 && printf "%s\\n%s\\n" "$TP_PY" "$TP_SRC"'], {
    cwd: PEERS_DIR,
    env: { ...process.env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const timer = setTimeout(() => proc.kill("SIGKILL"), 300_000);
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  const [python, src] = out.trim().split("\n");
  if (code !== 0 || !python || !src) throw new Error(`tp_prepare failed (exit ${code}):\n${err.slice(-2000)}`);
  return { python, src };
}

export interface ComputeNode {
  pid: number;
  log(): string;
  /** Resolves once the node logged its API v1 registration with the relay. */
  registered(timeoutMs?: number): Promise<void>;
  /** SIGSTOP / SIGCONT: a node that is (for a while) too slow to answer. */
  pause(): void;
  resume(): void;
  stop(): Promise<void>;
}

export async function startComputeNode(peers: PeersPython, relayUrl: string): Promise<ComputeNode> {
  const home = mkdtempSync(join(tmpdir(), "tp-web-node-"));
  const port = await freePort();
  // Only what the node needs: nothing from the runner's environment can redirect it.
  const env = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: home,
    USE_MOCK_LLM: "1",
    PYTHONUNBUFFERED: "1",
    PYTHONDONTWRITEBYTECODE: "1",
    TOKEN_PLACE_RELAY_UPSTREAMS: relayUrl,
  };
  const proc = Bun.spawn(
    [peers.python, "server.py", "--relay_url", relayUrl, "--server_host", "127.0.0.1", "--server_port", String(port), "--use_mock_llm"],
    { cwd: peers.src, env, stdin: "ignore", stdout: "pipe", stderr: "pipe" },
  );
  let text = "";
  const pump = async (s: ReadableStream<Uint8Array>) => {
    const dec = new TextDecoder();
    for await (const chunk of s) text += dec.decode(chunk, { stream: true });
  };
  void pump(proc.stdout).catch(() => {});
  void pump(proc.stderr).catch(() => {});
  const pid = proc.pid;
  return {
    pid,
    log: () => text,
    async registered(timeoutMs = 60_000) {
      const deadline = performance.now() + timeoutMs;
      while (performance.now() < deadline) {
        if (/server\.registered relay=/.test(text)) return;
        if (proc.exitCode !== null) throw new Error(`server.py exited (${proc.exitCode}) before registering:\n${text.slice(-3000)}`);
        await Bun.sleep(100);
      }
      throw new Error(`server.py did not register within ${timeoutMs} ms:\n${text.slice(-3000)}`);
    },
    pause: () => process.kill(pid, "SIGSTOP"),
    resume: () => process.kill(pid, "SIGCONT"),
    async stop() {
      if (alive(pid)) process.kill(pid, "SIGCONT");
      for (const [signal, waitMs] of [["SIGINT", 10_000], ["SIGTERM", 5_000], ["SIGKILL", 5_000]] as const) {
        if (!alive(pid) || proc.exitCode !== null) break;
        proc.kill(signal);
        await Promise.race([proc.exited, Bun.sleep(waitMs)]);
      }
      rmSync(home, { recursive: true, force: true });
    },
  };
}
