/**
 * A stand-in for the distroless container, built with bubblewrap: the relay runs as the real
 * uid/gid 65532 (dropped with setpriv before bwrap, so it owns none of the files it sees), with
 * no capabilities and no_new_privs, in fresh user/pid/ipc/uts/cgroup/mount namespaces, on a
 * read-only root that holds only the binary (at the image's path) and the glibc files `ldd`
 * names, plus /proc (every container runtime mounts it). No /tmp, no /dev, no /etc, no HOME;
 * the environment is cleared except for the variables passed in.
 *
 * The network namespace is shared with the test so it can reach the relay on 127.0.0.1 (a
 * container's port mapping does the same job).
 *
 * Why setpriv + an unprivileged user namespace: bwrap's --uid needs a user namespace, and if
 * bwrap is started as root that namespace maps uid 65532 inside to root outside, so the relay
 * would own every root-owned file it sees. Dropping to 65532 first makes the mapping
 * 65532 -> 65532, exactly like `USER 65532` in an image whose files belong to root.
 * Started by a non-root user (a developer, GitHub's runner) there is nothing to drop: bwrap maps
 * 65532 inside to that user outside, and root's files appear as the overflow uid (nobody).
 */
import { spawnSync } from "bun";
import { chmodSync, copyFileSync, existsSync, realpathSync } from "node:fs";
import { join } from "node:path";
import { tempDir, which } from "./harness.ts";

export const NONROOT = 65532;
const AS_ROOT = process.getuid?.() === 0;
/** The relay's uid as seen from outside the sandbox: 65532 when the tests run as root. */
export const OUTSIDE_UID: number = AS_ROOT ? NONROOT : (process.getuid?.() ?? -1);
export const OUTSIDE_GID: number = AS_ROOT ? NONROOT : (process.getgid?.() ?? -1);
/** Drops root to the real uid/gid 65532 before bwrap; nothing to drop for a non-root user. */
const DROP: string[] = AS_ROOT ? ["setpriv", `--reuid=${NONROOT}`, `--regid=${NONROOT}`, "--clear-groups", "--"] : [];
/** Where the Dockerfile puts the binary. */
export const IMAGE_BINARY_PATH = "/usr/local/bin/tokenplace-relay";

export interface LibFile {
  /** Path the dynamic loader asks for (as in the image). */
  path: string;
  /** The real file on this machine (symlinks resolved). */
  real: string;
}

/** The shared libraries and the ELF interpreter `ldd` reports for a binary. */
export function lddLibraries(binary: string): LibFile[] {
  const r = spawnSync(["ldd", binary], { stdout: "pipe", stderr: "pipe" });
  const out = r.stdout.toString();
  if (r.exitCode !== 0) throw new Error(`ldd ${binary} failed: ${r.stderr.toString()}${out}`);
  const libs = new Map<string, LibFile>();
  for (const line of out.split("\n")) {
    const t = line.trim();
    if (!t || t.startsWith("linux-vdso") || t.startsWith("linux-gate")) continue;
    if (t.includes("not found")) throw new Error(`ldd ${binary}: ${t}`);
    const m = t.match(/=>\s+(\/\S+)\s+\(/) ?? t.match(/^(\/\S+)\s+\(/);
    if (!m) continue;
    const path = m[1]!;
    libs.set(path, { path, real: realpathSync(path) });
  }
  if (libs.size === 0) throw new Error(`ldd ${binary} listed no libraries:\n${out}`);
  return [...libs.values()].sort((a, b) => a.path.localeCompare(b.path));
}

/** The binary copied to a root-owned, 0555 file in a world-traversable temp dir (as in the image). */
export function stageBinary(binary: string): { path: string; remove: () => void } {
  const dir = tempDir("relay-sandbox-");
  chmodSync(dir.path, 0o755);
  const path = join(dir.path, "tokenplace-relay");
  copyFileSync(binary, path);
  chmodSync(path, 0o555);
  return { path, remove: dir.remove };
}

export interface SandboxSpec {
  /** The staged binary (see stageBinary). */
  binary: string;
  libs: LibFile[];
  env: Record<string, string>;
  args?: string[];
}

/** argv: [setpriv (root: drop to 65532)] -> bwrap (namespaces, read-only minimal root) -> the relay. */
export function sandboxCommand(spec: SandboxSpec): string[] {
  const cmd = [
    ...DROP,
    "bwrap",
    "--unshare-all",
    "--share-net",
    "--die-with-parent",
    "--new-session",
    "--uid",
    String(NONROOT),
    "--gid",
    String(NONROOT),
    "--clearenv",
  ];
  for (const [k, v] of Object.entries(spec.env)) cmd.push("--setenv", k, v);
  for (const lib of spec.libs) cmd.push("--ro-bind", lib.real, lib.path);
  cmd.push("--ro-bind", spec.binary, IMAGE_BINARY_PATH);
  cmd.push("--proc", "/proc");
  cmd.push("--chdir", "/");
  // Last: make the tmpfs bwrap builds the root from read-only too (mount points included).
  cmd.push("--remount-ro", "/");
  cmd.push(IMAGE_BINARY_PATH, ...(spec.args ?? []));
  return cmd;
}

/**
 * Problems that keep the sandbox from running here: missing tools, or a kernel/container that
 * refuses unprivileged user namespaces (then bwrap fails at once; its message is returned).
 */
export function sandboxProblems(): string[] {
  const problems: string[] = [];
  for (const tool of ["bwrap", "ldd", ...(AS_ROOT ? ["setpriv"] : [])]) {
    if (!which(tool)) problems.push(`${tool} not found (${tool === "bwrap" ? "apt-get install bubblewrap; " : ""}run scripts/install-system-deps.sh)`);
  }
  if (problems.length > 0) return problems;
  const probe = spawnSync(
    [...DROP, "bwrap", "--unshare-all", "--share-net", "--uid", String(NONROOT), "--ro-bind", "/", "/", "--proc", "/proc", "true"],
    { stdout: "pipe", stderr: "pipe", env: {} },
  );
  if (probe.exitCode !== 0)
    problems.push(
      `bwrap cannot create namespaces as uid ${NONROOT} here (exit ${probe.exitCode}): ${probe.stderr.toString().trim()} ` +
        "(needs unprivileged user namespaces: sysctl user.max_user_namespaces > 0; on Ubuntu >= 23.10 also " +
        "sysctl kernel.apparmor_restrict_unprivileged_userns=0; inside Docker, --security-opt seccomp=unconfined or --privileged)",
    );
  return problems;
}

export function exists(path: string): boolean {
  return existsSync(path);
}
