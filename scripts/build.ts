/**
 * Compiles the relay into standalone binaries: dist/tokenplace-relay-linux-{x64,arm64}.
 * Usage: bun run scripts/build.ts [--target x64|arm64]... [--outdir dist]
 *
 * Cross-compiles from the build machine (Bun fetches the target runtime from the npm registry);
 * never build inside an emulated arm64 environment (Bun aborts under QEMU-emulated builds).
 */
import { $ } from "bun";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import pkg from "../package.json" with { type: "json" };

const TARGETS = { x64: "bun-linux-x64", arm64: "bun-linux-arm64" } as const;
type Arch = keyof typeof TARGETS;

const args = process.argv.slice(2);
const wanted: Arch[] = [];
let outdir = "dist";
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === "--target") wanted.push(args[++i] as Arch);
  else if (a === "--outdir") outdir = args[++i] ?? outdir;
  else throw new Error(`build: unknown argument ${a}`);
}
const arches = wanted.length > 0 ? wanted : (Object.keys(TARGETS) as Arch[]);
for (const a of arches) if (!(a in TARGETS)) throw new Error(`build: unknown target ${a} (x64 or arm64)`);

/** How long the profiling run may take to start, answer and stop before the build gives up on it. */
const ORDER_RUN_TIMEOUT_MS = 15_000;

/**
 * Starts `binary` in proxy mode on a free loopback port (the upstream is a closed port: its
 * health probe fails, which start-up survives), asks /healthz once, stops it with SIGTERM (the
 * relay's own shutdown path), and says why not if `profile` was not written.
 */
async function recordBytecodeOrder(binary: string, profile: string): Promise<string | undefined> {
  const env = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    BUN_BYTECODE_ORDER_OUT: profile,
    RELAY_HOST: "127.0.0.1",
    RELAY_PORT: "0",
    TOKENPLACE_RELAY_UPSTREAM_URL: "http://127.0.0.1:9",
    BUN_CONFIG_MAX_HTTP_REQUESTS: "256",
  };
  const proc = Bun.spawn([binary], { env, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => proc.kill("SIGKILL"), ORDER_RUN_TIMEOUT_MS);
  try {
    const port = await listeningPort(proc.stdout);
    if (port === undefined) return `the profiling run did not start: ${(await new Response(proc.stderr).text()).trim().slice(0, 300)}`;
    await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.arrayBuffer()).catch(() => undefined);
    proc.kill("SIGTERM");
    await proc.exited;
    return existsSync(profile) ? undefined : `the profiling run exited ${proc.exitCode ?? proc.signalCode} without writing a profile`;
  } finally {
    clearTimeout(timer);
    proc.kill("SIGKILL");
  }
}

/** The port of the relay's "listening" line (JSON on stdout), or undefined if stdout ends first. */
async function listeningPort(stdout: ReadableStream<Uint8Array>): Promise<number | undefined> {
  let text = "";
  const decoder = new TextDecoder();
  for await (const chunk of stdout) {
    text += decoder.decode(chunk, { stream: true });
    for (const line of text.split("\n")) {
      if (!line.includes('"listening"')) continue;
      const port = (JSON.parse(line) as { port?: unknown }).port;
      if (typeof port === "number") return port;
    }
  }
  return undefined;
}

const revision = process.env.RELAY_BUILD_REVISION ?? ((await $`git rev-parse --short=12 HEAD`.nothrow().quiet().text()).trim() || "unknown");
mkdirSync(outdir, { recursive: true });

for (const arch of arches) {
  const outfile = `${outdir}/tokenplace-relay-linux-${arch}`;
  const t0 = performance.now();
  // The binary must not pick up a stray .env or bunfig.toml from whatever directory it runs in.
  // --bytecode: the module graph ships precompiled (JavaScriptCore bytecode), which more than
  // halves the binary's start-up (measured: ~115 ms -> ~45 ms of CPU to the first /healthz); it
  // needs an entry without top-level await (src/main.ts). Only for the build machine's own
  // architecture: cross-compiled bytecode crashes at launch (oven-sh/bun#18416), so a
  // cross-compiled binary starts from source.
  const bytecode = arch === process.arch ? ["--bytecode"] : [];
  const compile = (extra: string[] = []) =>
    $`${process.execPath} build src/main.ts --compile ${bytecode} ${extra} --minify --sourcemap=none --target=${TARGETS[arch]} --no-compile-autoload-dotenv --no-compile-autoload-bunfig --define RELAY_BUILD_REVISION=${JSON.stringify(revision)} --outfile ${outfile}`.quiet();
  await compile();
  // Bytecode layout: the embedded module graph is mapped from the binary, and every page of it
  // that start-up touches stays resident. Built twice: the first binary runs once and records the
  // functions a start and a first request use (BUN_BYTECODE_ORDER_OUT), the second places their
  // bytecode together at the front (--bytecode-order). Measured: ~1.3 MiB less RSS idle.
  let ordered = false;
  if (bytecode.length > 0) {
    const profile = join(mkdtempSync(join(tmpdir(), "relay-order-")), "order.txt");
    const why = await recordBytecodeOrder(outfile, profile);
    if (why === undefined) {
      await compile([`--bytecode-order=${profile}`]);
      ordered = true;
    } else console.warn(`build: ${outfile} keeps the default bytecode layout (${why})`);
    rmSync(dirname(profile), { recursive: true, force: true });
  }
  console.log(`built ${outfile} (${pkg.version}, ${revision}${bytecode.length > 0 ? `, bytecode${ordered ? " in start-up order" : ""}` : ""}) in ${Math.round(performance.now() - t0)} ms`);
}
