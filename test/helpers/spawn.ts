import type { Subprocess } from "bun";

export const ROOT = new URL("../..", import.meta.url).pathname;
export const BUN = process.execPath;

export interface Spawned {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  port: number;
  url: string;
  /** Every stdout line so far (JSON log lines). */
  lines: string[];
  stderr(): Promise<string>;
  waitForLine(pred: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  /** Exit code, once the process exited and all of its stdout was read into `lines`. */
  closed(): Promise<number>;
  kill(signal?: NodeJS.Signals): void;
}

/**
 * Starts the relay (from source, or a compiled binary) on an ephemeral port and waits for its
 * "listening" line. The environment is exactly what is passed: nothing leaks in from the runner.
 */
export async function spawnRelay(env: Record<string, string>, opts: { cmd?: string[]; timeoutMs?: number } = {}): Promise<Spawned> {
  const cmd = opts.cmd ?? [BUN, "run", `${ROOT}src/main.ts`];
  const proc = Bun.spawn(cmd, {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", RELAY_PORT: "0", RELAY_HOST: "127.0.0.1", ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const lines: string[] = [];
  const waiters: { pred: (l: string) => boolean; resolve: (l: string) => void }[] = [];
  const stdoutDone = (async () => {
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of proc.stdout) {
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        lines.push(line);
        for (const w of [...waiters]) if (w.pred(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }
  })().catch(() => {});
  const waitForLine = (pred: (l: string) => boolean, timeoutMs = 15_000) => {
    const seen = lines.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise<string>((resolve, reject) => {
      const w = { pred, resolve: (l: string) => (clearTimeout(t), resolve(l)) };
      const t = setTimeout(() => {
        waiters.splice(waiters.indexOf(w), 1);
        reject(new Error(`no matching line within ${timeoutMs} ms; got:\n${lines.join("\n")}`));
      }, timeoutMs);
      waiters.push(w);
    });
  };
  let stderrText: Promise<string> | undefined;
  const stderr = () => (stderrText ??= new Response(proc.stderr).text());
  try {
    const listening = await Promise.race([
      waitForLine((l) => l.includes('"msg":"listening"'), opts.timeoutMs ?? 15_000),
      proc.exited.then(async (code) => {
        throw new Error(`relay exited with ${code} before listening: ${await stderr()}`);
      }),
    ]);
    const port = JSON.parse(listening).port as number;
    const closed = async () => {
      const code = await proc.exited;
      await stdoutDone;
      return code;
    };
    return { proc, port, url: `http://127.0.0.1:${port}`, lines, stderr, waitForLine, closed, kill: (s = "SIGKILL") => proc.kill(s) };
  } catch (err) {
    proc.kill("SIGKILL");
    throw err;
  }
}

/** Runs a command to completion with a bounded time. */
export async function run(cmd: string[], env: Record<string, string> = {}, timeoutMs = 15_000) {
  const proc = Bun.spawn(cmd, { cwd: ROOT, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env }, stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}
