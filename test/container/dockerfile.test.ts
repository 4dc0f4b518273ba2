/**
 * The Dockerfile's invariants, checked without a Docker engine (hadolint also lints it in
 * scripts/lint-workflows.sh): the final stage is distroless pinned by digest and runs as
 * nonroot (65532); ENTRYPOINT and HEALTHCHECK are exec form (there is no shell) and the
 * HEALTHCHECK calls the binary's `healthcheck`; EXPOSE and ENV RELAY_PORT equal the relay's
 * DEFAULT_PORT; the OCI labels are there; every base image is pinned by digest; every stage that
 * runs a command runs on $BUILDPLATFORM (Bun aborts in QEMU-emulated stages) and cross-compiles
 * with --target; .dockerignore keeps secrets and junk out and lets the build inputs in.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import pkg from "../../package.json" with { type: "json" };
import { DEFAULT_PORT } from "../../src/config/defaults.ts";
import { ROOT } from "./harness.ts";

export interface Instruction {
  keyword: string;
  /** Everything after the keyword, continuation lines joined. */
  args: string;
  line: number;
}
export interface Stage {
  from: Instruction;
  image: string;
  name: string | undefined;
  platform: string | undefined;
  instructions: Instruction[];
}

/** Minimal Dockerfile reader: comments dropped (also inside continuations), `\` continuations joined. */
export function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let buf = "";
  let start = 0;
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!;
    const t = raw.trim();
    if (t.startsWith("#") || (t === "" && buf === "")) continue;
    if (buf === "") start = i + 1;
    if (t.endsWith("\\")) {
      buf += `${t.slice(0, -1).trimEnd()} `;
      continue;
    }
    buf += t;
    const m = buf.match(/^(\S+)\s*(.*)$/s);
    if (m) out.push({ keyword: m[1]!.toUpperCase(), args: m[2]!.trim(), line: start });
    buf = "";
  }
  if (buf.trim()) throw new Error("Dockerfile ends inside a line continuation");
  return out;
}

export function stages(instructions: Instruction[]): Stage[] {
  const out: Stage[] = [];
  for (const ins of instructions) {
    if (ins.keyword === "FROM") {
      const words = ins.args.split(/\s+/);
      const platform = words.find((w) => w.startsWith("--platform="))?.slice("--platform=".length);
      const rest = words.filter((w) => !w.startsWith("--"));
      const asIdx = rest.findIndex((w) => w.toUpperCase() === "AS");
      out.push({ from: ins, image: rest[0]!, name: asIdx >= 0 ? rest[asIdx + 1] : undefined, platform, instructions: [] });
    } else if (out.length > 0) out.at(-1)!.instructions.push(ins);
    else if (ins.keyword !== "ARG") throw new Error(`line ${ins.line}: ${ins.keyword} before the first FROM`);
  }
  return out;
}

/** Exec form: a JSON array of strings (no shell needed). */
function execForm(args: string): string[] | undefined {
  try {
    const v = JSON.parse(args) as unknown;
    return Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === "string") ? (v as string[]) : undefined;
  } catch {
    return undefined;
  }
}

/** LABEL/ENV key=value pairs (quoted values allowed). */
function keyValues(args: string): Map<string, string> {
  const out = new Map<string, string>();
  const re = /([A-Za-z0-9_.\-]+)=("((?:[^"\\]|\\.)*)"|(\S*))/g;
  for (const m of args.matchAll(re)) out.set(m[1]!, m[3] ?? m[4] ?? "");
  return out;
}

// .dockerignore semantics (enough for these checks): patterns are globs relative to the context
// root, a pattern also matches everything below a matching directory, `!` re-includes, and the
// last matching pattern wins.
function globToRegExp(glob: string): RegExp {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === "*" && glob[i + 1] === "*") {
      re += ".*";
      i++;
      if (glob[i + 1] === "/") i++;
    } else if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${re}(/.*)?$`);
}
export function dockerignored(patterns: string[], path: string): boolean {
  let ignored = false;
  for (const p of patterns) {
    const neg = p.startsWith("!");
    const glob = (neg ? p.slice(1) : p).replace(/^\/+/, "").replace(/\/+$/, "");
    if (globToRegExp(glob).test(path)) ignored = !neg;
  }
  return ignored;
}

const dockerfile = readFileSync(join(ROOT, "Dockerfile"), "utf8");
const all = parseDockerfile(dockerfile);
const st = stages(all);
const final = st.at(-1)!;
const finalOf = (kw: string) => final.instructions.filter((i) => i.keyword === kw);
const ignorePatterns = readFileSync(join(ROOT, ".dockerignore"), "utf8")
  .split("\n")
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith("#"));

describe("Dockerfile: final stage", () => {
  test("is distroless base-nossl (glibc, no shell), nonroot tag, pinned by digest", () => {
    expect(final.image).toMatch(/^gcr\.io\/distroless\/base-nossl-debian\d+:nonroot@sha256:[0-9a-f]{64}$/);
    expect(final.platform).toBeUndefined();
  });

  test("runs as 65532 (nonroot), set explicitly and not changed afterwards", () => {
    const users = finalOf("USER");
    expect(users.length).toBeGreaterThan(0);
    expect(users.at(-1)!.args).toMatch(/^(65532|nonroot)(:(65532|nonroot))?$/);
  });

  test("runs no command (nothing executes for the target platform, so no QEMU)", () => {
    expect(finalOf("RUN")).toEqual([]);
  });

  test("ENTRYPOINT is exec form and names the binary the stage copies in", () => {
    const eps = finalOf("ENTRYPOINT");
    expect(eps).toHaveLength(1);
    const ep = execForm(eps[0]!.args);
    expect(ep).toEqual(["/usr/local/bin/tokenplace-relay"]);
    const copied = finalOf("COPY").some((c) => c.args.split(/\s+/).at(-1) === ep![0]);
    expect(copied).toBe(true);
    expect(finalOf("CMD")).toEqual([]);
  });

  test("HEALTHCHECK is exec form and runs the binary's healthcheck subcommand", () => {
    const hcs = finalOf("HEALTHCHECK");
    expect(hcs).toHaveLength(1);
    const m = hcs[0]!.args.match(/^((?:--\S+\s+)*)CMD\s+(.*)$/s);
    expect(m).not.toBeNull();
    const cmd = execForm(m![2]!);
    expect(cmd).toEqual([execForm(finalOf("ENTRYPOINT")[0]!.args)![0]!, "healthcheck"]);
    for (const opt of ["interval", "timeout", "start-period", "retries"]) expect(m![1]).toContain(`--${opt}=`);
  });

  test(`EXPOSE and ENV RELAY_PORT equal the relay's DEFAULT_PORT (${DEFAULT_PORT})`, () => {
    const exposes = finalOf("EXPOSE").flatMap((i) => i.args.split(/\s+/));
    expect(exposes).toEqual([String(DEFAULT_PORT)]);
    const env = new Map(finalOf("ENV").flatMap((i) => [...keyValues(i.args)]));
    expect(env.get("RELAY_PORT")).toBe(String(DEFAULT_PORT));
  });

  test("carries the OCI labels (licence = package.json's)", () => {
    const labels = new Map(finalOf("LABEL").flatMap((i) => [...keyValues(i.args)]));
    for (const k of ["title", "description", "source", "revision", "version", "created", "licenses"]) {
      expect(labels.get(`org.opencontainers.image.${k}`) ?? "").not.toBe("");
    }
    expect(labels.get("org.opencontainers.image.licenses")).toBe(pkg.license);
    expect(labels.get("org.opencontainers.image.title")).toBe("tokenplace-relay");
  });

  test("the binary is copied root-owned and read-only (the relay cannot rewrite itself)", () => {
    const cp = finalOf("COPY").find((c) => c.args.endsWith("/usr/local/bin/tokenplace-relay"));
    expect(cp).toBeDefined();
    expect(cp!.args).toMatch(/--chown=0:0/);
    expect(cp!.args).toMatch(/--chmod=0?555/);
  });

  test("declares no VOLUME (a read-only root needs none)", () => {
    expect(finalOf("VOLUME")).toEqual([]);
  });
});

describe("Dockerfile: every stage", () => {
  test("every external base image is pinned by digest (no tags alone, no latest)", () => {
    const names = new Set(st.map((s) => s.name).filter(Boolean));
    for (const s of st) {
      if (s.image === "scratch" || names.has(s.image)) continue;
      expect({ line: s.from.line, image: s.image }).toEqual({ line: s.from.line, image: expect.stringMatching(/^[^\s:@]+(:[\w.-]+)?@sha256:[0-9a-f]{64}$/) });
      expect(s.image).not.toMatch(/:latest@/);
    }
    // Every digest pin explains how to bump it.
    expect(dockerfile).toContain("docker buildx imagetools inspect");
  });

  test("stages that run commands run on $BUILDPLATFORM (cross-compile, never emulate)", () => {
    for (const s of st) {
      if (s.instructions.some((i) => i.keyword === "RUN")) expect({ stage: s.name, platform: s.platform }).toEqual({ stage: s.name, platform: "$BUILDPLATFORM" });
    }
  });

  test("the builder cross-compiles per TARGETARCH (amd64 -> x64, arm64 -> arm64) with the autoload flags off", () => {
    const build = st.find((s) => s.instructions.some((i) => i.keyword === "RUN" && i.args.includes("build.ts")));
    expect(build).toBeDefined();
    const args = build!.instructions.map((i) => `${i.keyword} ${i.args}`).join("\n");
    expect(args).toContain("ARG TARGETARCH");
    expect(args).toMatch(/amd64\)\s*arch=x64/);
    expect(args).toMatch(/arm64\)\s*arch=arm64/);
    expect(args).toMatch(/build\.ts --target "?\$\{arch\}"?/);
    // scripts/build.ts is what turns --target into bun-linux-<arch> with both autoload flags off
    // (Bun.build's compile options; the CLI spells them --no-compile-autoload-dotenv/-bunfig).
    const buildTs = readFileSync(join(ROOT, "scripts/build.ts"), "utf8");
    for (const flag of ["compile: {", "bun-linux-x64", "bun-linux-arm64", "autoloadDotenv: false", "autoloadBunfig: false"]) expect(buildTs).toContain(flag);
    expect(args).toContain("RELAY_BUILD_REVISION");
  });

  test("there is a `binaries` stage exporting the standalone release binaries", () => {
    const bins = st.find((s) => s.name === "binaries");
    expect(bins?.image).toBe("scratch");
  });

  test("no ADD from URLs, no secrets in ENV/ARG names", () => {
    expect(all.filter((i) => i.keyword === "ADD")).toEqual([]);
    for (const i of all.filter((x) => x.keyword === "ENV" || x.keyword === "ARG")) expect(i.args).not.toMatch(/(TOKEN|SECRET|PASSWORD)\b/i);
  });
});

describe(".dockerignore", () => {
  test("keeps VCS data, dependencies, build output, tool caches and env files out", () => {
    for (const p of [".git", ".git/config", "node_modules", "node_modules/bun/package.json", "dist", "dist/tokenplace-relay-linux-x64", ".env", "src/.env", ".tools/bin/helm", "charts/tokenplace-relay/values.yaml", "test/container/harness.ts", "Dockerfile"]) {
      expect({ path: p, ignored: dockerignored(ignorePatterns, p) }).toEqual({ path: p, ignored: true });
    }
  });

  test("lets in every file the Dockerfile copies from the context, and each exists", () => {
    const sources = all
      .filter((i) => i.keyword === "COPY" && !i.args.includes("--from="))
      .flatMap((i) => i.args.split(/\s+/).filter((w) => !w.startsWith("--")).slice(0, -1));
    expect(sources.length).toBeGreaterThan(0);
    for (const src of sources) {
      const p = src.replace(/\/+$/, "");
      expect({ path: p, exists: existsSync(join(ROOT, p)) }).toEqual({ path: p, exists: true });
      expect({ path: p, ignored: dockerignored(ignorePatterns, p) }).toEqual({ path: p, ignored: false });
    }
    // What src/ needs at build time outside src/: package.json (src/version.ts imports it).
    expect(dockerignored(ignorePatterns, "src/main.ts")).toBe(false);
    expect(dockerignored(ignorePatterns, "package.json")).toBe(false);
  });
});

describe("the Dockerfile reader itself", () => {
  test("joins continuations, drops comments inside them, splits stages", () => {
    const ins = parseDockerfile('FROM a@sha256:x AS one\n# c\nRUN a \\\n  # inner\n  b\nFROM --platform=$BUILDPLATFORM one AS two\nCMD ["x"]\n');
    expect(ins.map((i) => [i.keyword, i.args])).toEqual([
      ["FROM", "a@sha256:x AS one"],
      ["RUN", "a b"],
      ["FROM", "--platform=$BUILDPLATFORM one AS two"],
      ["CMD", '["x"]'],
    ]);
    const s = stages(ins);
    expect(s.map((x) => [x.image, x.name, x.platform])).toEqual([
      ["a@sha256:x", "one", undefined],
      ["one", "two", "$BUILDPLATFORM"],
    ]);
  });

  test("dockerignore matching: last match wins, directories cover their contents", () => {
    expect(dockerignored(["*", "!src/"], "src/a/b.ts")).toBe(false);
    expect(dockerignored(["*", "!src/", "**/.env"], "src/.env")).toBe(true);
    expect(dockerignored(["*", "!package.json"], "package-lock.json")).toBe(true);
  });
});
