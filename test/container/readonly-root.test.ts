/**
 * The image's runtime contract, without a Docker engine: the x64 binary serves /livez and
 * /healthz as uid 65532 on a read-only root that contains nothing but the binary and the C
 * library files it links (plus /proc), with no /tmp and an environment holding only the relay's
 * variables; its `healthcheck` subcommand works in the same conditions (as Docker's HEALTHCHECK
 * runs it), and it drains and exits 0 on SIGTERM without needing a writable path either.
 * See test/container/sandbox.ts for how the sandbox is built and why.
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { lstatSync, readFileSync, readdirSync, readlinkSync } from "node:fs";
import { X64, binaryProblem, cleanupAfterAll, gate, gatedTest, getJson, processTree, run, Spawned, type ProcInfo } from "./harness.ts";
import { IMAGE_BINARY_PATH, NONROOT, OUTSIDE_GID, OUTSIDE_UID, lddLibraries, sandboxCommand, sandboxProblems, stageBinary, type LibFile } from "./sandbox.ts";

const g = gate("read-only-root sandbox (bubblewrap)", [binaryProblem(X64), ...(binaryProblem(X64) ? [] : sandboxProblems())]);

cleanupAfterAll();

/** Every file and symlink under the process's root (seen through /proc/PID/root), /proc excluded. */
function filesUnderRoot(pid: number): string[] {
  const base = `/proc/${pid}/root`;
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const name of readdirSync(base + rel)) {
      const p = `${rel}/${name}`;
      if (p === "/proc") continue;
      const st = lstatSync(base + p);
      if (st.isDirectory()) walk(p);
      else out.push(st.isSymbolicLink() ? `${p} -> ${readlinkSync(base + p)}` : p);
    }
  };
  walk("");
  return out.sort();
}

interface Mount {
  point: string;
  options: string[];
  fstype: string;
}
function mounts(pid: number): Mount[] {
  return readFileSync(`/proc/${pid}/mountinfo`, "utf8")
    .trim()
    .split("\n")
    .map((line) => {
      const [left, right] = line.split(" - ");
      const f = left!.split(" ");
      return { point: f[4]!, options: f[5]!.split(","), fstype: right!.split(" ")[0]! };
    });
}

function environKeys(pid: number): string[] {
  return readFileSync(`/proc/${pid}/environ`, "utf8")
    .split("\0")
    .filter(Boolean)
    .map((kv) => kv.slice(0, kv.indexOf("=")))
    .sort();
}

describe("x64 binary in a read-only, near-empty root as uid 65532", () => {
  let libs: LibFile[] = [];
  let staged: { path: string; remove: () => void } | undefined;
  let relay: Spawned | undefined;
  let port = 0;
  let relayProc: ProcInfo | undefined;
  const ENV = { RELAY_PORT: "0", TOKENPLACE_RELAY_ONLY: "true" };

  beforeAll(async () => {
    if (!g.ok) return;
    libs = lddLibraries(X64);
    staged = stageBinary(X64);
    relay = new Spawned(sandboxCommand({ binary: staged.path, libs, env: ENV }));
    port = await relay.waitListening(30_000);
    relayProc = processTree(relay.proc.pid).find((p) => p.name.startsWith("tokenplace-rel"));
  });
  afterAll(async () => {
    await relay?.stop();
    staged?.remove();
  });

  gatedTest(g, "the binary links only glibc (what distroless base-nossl provides)", () => {
    const names = libs.map((l) => l.path.split("/").pop()!);
    for (const n of names) expect(n).toMatch(/^(ld-linux-x86-64\.so\.2|libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1)$/);
    expect(names).toContain("libc.so.6");
  });

  gatedTest(g, "serves /livez and /healthz (relay-only mode)", async () => {
    const live = await getJson(`http://127.0.0.1:${port}/livez`);
    expect(live.status).toBe(200);
    expect(live.body).toMatchObject({ status: "alive" });
    const ready = await getJson(`http://127.0.0.1:${port}/healthz`);
    expect(ready.status).toBe(200);
    expect(ready.body).toMatchObject({ status: "ok", relayOnly: true });
  });

  gatedTest(g, "every process in the sandbox is uid/gid 65532 with no capabilities and no_new_privs", () => {
    // Seen from outside: 65532 itself when the tests run as root (setpriv), else the invoking user.
    const tree = processTree(relay!.proc.pid);
    expect(tree.length).toBeGreaterThan(0);
    for (const p of tree) {
      expect({ pid: p.pid, name: p.name, uid: p.uid }).toEqual({ pid: p.pid, name: p.name, uid: [OUTSIDE_UID, OUTSIDE_UID, OUTSIDE_UID, OUTSIDE_UID] });
      expect({ name: p.name, gid: p.gid }).toEqual({ name: p.name, gid: [OUTSIDE_GID, OUTSIDE_GID, OUTSIDE_GID, OUTSIDE_GID] });
    }
    expect(relayProc).toBeDefined();
    // Inside its user namespace the relay is 65532, and only that one id is mapped.
    const map = (f: string) => readFileSync(`/proc/${relayProc!.pid}/${f}`, "utf8").trim().split(/\s+/).map(Number);
    expect(map("uid_map")).toEqual([NONROOT, OUTSIDE_UID, 1]);
    expect(map("gid_map")).toEqual([NONROOT, OUTSIDE_GID, 1]);
    expect(relayProc!.capEff).toBe("0000000000000000");
    expect(relayProc!.noNewPrivs).toBe("1");
  });

  gatedTest(g, "the relay's environment holds only the relay's variables", () => {
    // bwrap always exports PWD (for its --chdir); everything else was cleared with --clearenv.
    expect(environKeys(relayProc!.pid)).toEqual([...Object.keys(ENV), "PWD"].sort());
  });

  gatedTest(g, "its root holds only the binary and the C libraries, every mount but /proc is read-only, no /tmp", () => {
    const expected = [IMAGE_BINARY_PATH, ...libs.map((l) => l.path)].sort();
    expect(filesUnderRoot(relayProc!.pid)).toEqual(expected);
    const ms = mounts(relayProc!.pid);
    const points = ms.map((m) => m.point);
    expect(points).toContain("/");
    expect(points).toContain("/proc");
    expect(points.some((p) => p === "/tmp" || p.startsWith("/tmp/") || p === "/dev")).toBe(false);
    for (const m of ms) {
      if (m.point === "/proc" || m.point.startsWith("/proc/")) continue;
      expect({ point: m.point, ro: m.options.includes("ro") }).toEqual({ point: m.point, ro: true });
    }
  });

  gatedTest(g, "`healthcheck` exits 0 inside the same kind of sandbox (as Docker's HEALTHCHECK runs it)", async () => {
    const hc = await run(sandboxCommand({ binary: staged!.path, libs, env: { RELAY_PORT: String(port) }, args: ["healthcheck"] }), { timeoutMs: 20_000 });
    expect({ status: hc.status, stderr: hc.stderr }).toEqual({ status: 0, stderr: "" });
  });

  gatedTest(g, "SIGTERM drains and exits 0, and nothing on stderr complains about the filesystem", async () => {
    expect(relayProc).toBeDefined();
    process.kill(relayProc!.pid, "SIGTERM");
    const res = await relay!.wait(30_000);
    expect(res.status).toBe(0);
    expect(res.stdout).toContain('"msg":"stopped"');
    expect(res.stderr).not.toMatch(/EROFS|EACCES|read-only|ENOENT|panic|error/i);
  });
});

describe("readiness in the sandbox without TOKENPLACE_RELAY_ONLY", () => {
  gatedTest(
    g,
    "/healthz is 503 degraded JSON: the GPU host name cannot resolve in an empty root",
    async () => {
      const libs = lddLibraries(X64);
      const staged = stageBinary(X64);
      const relay = new Spawned(sandboxCommand({ binary: staged.path, libs, env: { RELAY_PORT: "0" } }));
      try {
        const port = await relay.waitListening(30_000);
        const r = await getJson(`http://127.0.0.1:${port}/healthz`, 15_000);
        expect(r.body).toBeDefined();
        const body = r.body as { status?: string; gpuHostResolves?: boolean; relayOnly?: boolean };
        expect(body.relayOnly).toBe(false);
        // No /etc/hosts, /etc/resolv.conf or DNS in the sandbox: "gpu-server" cannot resolve.
        expect({ status: r.status, body: body.status, resolves: body.gpuHostResolves }).toEqual({ status: 503, body: "degraded", resolves: false });
        const live = await getJson(`http://127.0.0.1:${port}/livez`);
        expect(live.status).toBe(200);
      } finally {
        await relay.stop();
        staged.remove();
      }
    },
    60_000,
  );
});

