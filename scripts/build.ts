/**
 * Compiles the relay into standalone binaries: dist/tokenplace-relay-linux-{x64,arm64}.
 * Usage: bun run scripts/build.ts [--target x64|arm64]... [--outdir dist]
 *
 * Cross-compiles from the build machine (Bun fetches the target runtime from the npm registry);
 * never build inside an emulated arm64 environment (Bun aborts under QEMU-emulated builds).
 * The bundle leaves out of the relay's start-up what its dependencies load but it never runs
 * (STARTUP_TRIMS): every module a binary evaluates stays resident.
 */
import { $, type BunPlugin } from "bun";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import pkg from "../package.json" with { type: "json" };

const TARGETS = { x64: "bun-linux-x64", arm64: "bun-linux-arm64" } as const;
type Arch = keyof typeof TARGETS;
const ENTRY = new URL("../src/main.ts", import.meta.url).pathname;

/** What a build of the relay says when anything asks pino for a transport. */
export const PINO_TRANSPORT_STUB_MESSAGE =
  "pino transports are not part of this build of tokenplace-relay: it logs JSON lines to stdout (pipe them to pino-pretty or a log shipper)";

/**
 * One `require` the build changes: made by a file matching `importer` (a dependency's own file,
 * never the relay's) for `specifier`, exactly as written there. "replace": the module becomes
 * `contents`. "defer": the module is bundled as before but evaluated only when its export is
 * first used (see deferred()).
 */
export type StartupTrim = { importer: RegExp; specifier: string; why: string } & ({ kind: "replace"; contents: string } | { kind: "defer" });

/** A file of package `pkg` in node_modules, by its path inside the package (`/` separated). */
export const inPackage = (pkg: string, file: string) => new RegExp(`[\\\\/]node_modules[\\\\/]${pkg}[\\\\/]${file.replaceAll(".", "\\.").replaceAll("/", "[\\\\/]")}$`);

/**
 * What the relay's binary leaves out of its start-up. Each Node built-in and each module a binary
 * evaluates stays resident (its code, and the runtime's native code it exercises), so code the
 * relay never runs should not be loaded just because a dependency requires it at the top of a
 * file. Measured idle RSS: docs/demo-and-bench.md, "Where the relay's memory goes".
 */
export const STARTUP_TRIMS: readonly StartupTrim[] = [
  {
    importer: inPackage("pino", "pino.js"),
    specifier: "./lib/transport",
    why: "pino.transport() starts worker threads (thread-stream) that load their targets by file name (real-require), which a compiled binary cannot do (oven-sh/bun#10246); the relay writes through its own destination (src/log.ts)",
    kind: "replace",
    contents: `module.exports = function transport() { throw new Error(${JSON.stringify(PINO_TRANSPORT_STUB_MESSAGE)}); };`,
  },
  {
    importer: inPackage("pino", "lib/tools.js"),
    specifier: "./transport",
    why: "the `transport` option: the same transport machinery as pino.transport()",
    kind: "replace",
    contents: `module.exports = function transport() { throw new Error(${JSON.stringify(PINO_TRANSPORT_STUB_MESSAGE)}); };`,
  },
  {
    importer: inPackage("pino", "lib/tools.js"),
    specifier: "worker_threads",
    why: "read once for isMainThread (whether an asynchronous destination is ended at exit): Bun.isMainThread is the same fact without loading node:worker_threads",
    kind: "replace",
    contents: "module.exports = { isMainThread: Bun.isMainThread };",
  },
  {
    importer: inPackage("pino", "pino.js"),
    specifier: "./lib/caller",
    why: "the caller's file names, which only a transport receives (to resolve its targets); it evaluated node:util at start",
    kind: "replace",
    contents: "module.exports = function getCallers() { return []; };",
  },
  {
    importer: inPackage("sonic-boom", "index.js"),
    specifier: "util",
    why: "util.inherits once at load; the same two steps as Node's (super_, the prototype chain) without evaluating node:util",
    kind: "replace",
    contents: "module.exports = { inherits(ctor, superCtor) { Object.defineProperty(ctor, 'super_', { value: superCtor, writable: true, configurable: true }); Object.setPrototypeOf(ctor.prototype, superCtor.prototype); } };",
  },
  ...(["assert", "path"] as const).map((specifier) => ({
    importer: inPackage("sonic-boom", "index.js"),
    specifier,
    why: "called only when a destination opens a file by name (path.dirname, for mkdir) or closes (assert); the relay's writes to a descriptor it never closes",
    kind: "defer" as const,
  })),
  ...(["counter", "gauge", "histogram", "validation"] as const).map((file) => ({
    importer: inPackage("prom-client", `lib/${file}.js`),
    specifier: "util",
    why: "util.format and util.inspect only in the messages of errors thrown for invalid values or labels",
    kind: "defer" as const,
  })),
  {
    importer: inPackage("pino", "lib/redaction.js"),
    specifier: "@pinojs/redact",
    why: "pino's `redact` option only, which the relay does not use (src/log.ts censors with its own redactor)",
    kind: "defer",
  },
  {
    importer: inPackage("prom-client", "lib/metrics/processCpuTotal.js"),
    specifier: "@opentelemetry/api",
    why: "read only for exemplars (the current trace span), which the relay does not enable; evaluating it at start ran its ~50 modules",
    kind: "defer",
  },
];

/**
 * A module that stands for `target` (an absolute path) and evaluates it on the first use of its
 * export: reading a property, calling it, constructing it, `in`, instanceof. The relay's
 * dependencies only do these with the modules deferred here; a module whose export is used
 * while its importer loads must not be deferred (it would gain nothing anyway).
 */
function deferred(target: string): string {
  return `let real;
const load = () => (real ??= require(${JSON.stringify(target)}));
module.exports = new Proxy(function deferred() {}, {
  get: (_, key) => load()[key],
  has: (_, key) => key in load(),
  apply: (_, self, args) => Reflect.apply(load(), self, args),
  construct: (_, args, newTarget) => Reflect.construct(load(), args, newTarget === module.exports ? load() : newTarget),
});`;
}

/** The `require` calls of `specifier` in a CommonJS source, as a dependency writes them. */
const requireCall = (specifier: string) => new RegExp(`\\brequire\\((['"])(node:)?${specifier.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}\\1\\)`, "g");

/**
 * A Bun.build plugin that applies STARTUP_TRIMS (or `trims`). The importer's source is rewritten
 * to require `relay-trim:<n>` instead, because Bun's bundler resolves Node built-ins such as
 * worker_threads without asking plugins. A trim that no longer matches its importer (a
 * dependency changed) fails the build instead of silently trimming nothing.
 */
export function startupTrims(trims: readonly StartupTrim[] = STARTUP_TRIMS): BunPlugin {
  return {
    name: "relay-startup-trims",
    setup(build) {
      build.onLoad({ filter: /[\\/]node_modules[\\/].*\.c?js$/ }, async (args) => {
        const mine = trims.map((t, i) => ({ t, i })).filter(({ t }) => t.importer.test(args.path));
        if (mine.length === 0) return undefined;
        let source = await Bun.file(args.path).text();
        for (const { t, i } of mine) {
          const before = source;
          source = source.replace(requireCall(t.specifier), `require("relay-trim:${i}")`);
          if (source === before) throw new Error(`build: ${args.path} no longer requires ${t.specifier}: update STARTUP_TRIMS in scripts/build.ts`);
        }
        return { contents: source, loader: "js" };
      });
      // A deferred module's real path, resolved as its importer's require() would (the "require"
      // condition: the same file the bundle had before).
      const targets = new Map<string, string>();
      build.onResolve({ filter: /^relay-trim:\d+$/ }, (args) => {
        const t = trims[Number(args.path.slice("relay-trim:".length))]!;
        if (t.kind === "defer") targets.set(args.path, createRequire(args.importer).resolve(t.specifier));
        return { path: args.path, namespace: "relay-trim" };
      });
      build.onLoad({ filter: /.*/, namespace: "relay-trim" }, (args) => {
        const t = trims[Number(args.path.slice("relay-trim:".length))]!;
        return { contents: t.kind === "defer" ? deferred(targets.get(args.path)!) : t.contents, loader: "js" };
      });
    },
  };
}

/** How long the profiling run may take to start, answer and stop before the build gives up on it. */
const ORDER_RUN_TIMEOUT_MS = 15_000;
/**
 * How long the profiling run stays up after its first request: past the first ticks of the
 * relay's timers (the memory guard's sampling, the sweeper, the start-up collection), which run
 * in every idle relay, so their code is laid out with start-up's instead of scattered.
 */
const ORDER_RUN_IDLE_MS = 1_500;

/**
 * Starts `binary` in proxy mode on a free loopback port (in front of a local upstream that
 * answers its health probe), asks /healthz once, lets it idle ORDER_RUN_IDLE_MS, stops it with
 * SIGTERM (the relay's own shutdown path), and says why not if `profile` was not written.
 */
async function recordBytecodeOrder(binary: string, profile: string): Promise<string | undefined> {
  // An upstream whose health probe succeeds, as in a deployment: the probe's success path is
  // then laid out with the rest of start-up.
  const upstream = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("ok") });
  const env = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    BUN_BYTECODE_ORDER_OUT: profile,
    RELAY_HOST: "127.0.0.1",
    RELAY_PORT: "0",
    TOKENPLACE_RELAY_UPSTREAM_URL: upstream.url.href,
    BUN_CONFIG_MAX_HTTP_REQUESTS: "256",
  };
  const proc = Bun.spawn([binary], { env, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => proc.kill("SIGKILL"), ORDER_RUN_TIMEOUT_MS);
  try {
    const port = await listeningPort(proc.stdout);
    if (port === undefined) return `the profiling run did not start: ${(await new Response(proc.stderr).text()).trim().slice(0, 300)}`;
    await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.arrayBuffer()).catch(() => undefined);
    await Bun.sleep(ORDER_RUN_IDLE_MS);
    proc.kill("SIGTERM");
    await proc.exited;
    return existsSync(profile) ? undefined : `the profiling run exited ${proc.exitCode ?? proc.signalCode} without writing a profile`;
  } finally {
    clearTimeout(timer);
    proc.kill("SIGKILL");
    upstream.stop(true);
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

/** The build revision the binary reports (`--version`, the listening line). */
async function buildRevision(): Promise<string> {
  return process.env.RELAY_BUILD_REVISION ?? ((await $`git rev-parse --short=12 HEAD`.nothrow().quiet().text()).trim() || "unknown");
}

/**
 * The binary starts with JavaScriptCore's tier-up thresholds scaled by this, until src/main.ts
 * restores the normal policy once it listens (Bun.unsafe.setJITPolicy(1)). Start-up runs each
 * bundled module's require wrapper once, and together they crossed the optimizing (DFG) JIT's
 * threshold in some starts and not others: compiling run-once code, which paged in the DFG
 * compiler (~2 MiB) at start instead of when something runs often (an idle relay's timers, after
 * ~15 s; traffic). Start-up measured ~1 ms faster (median 13.7 vs 14.9 ms); after ~15 s idle the
 * RSS is the same either way. Traffic after start is optimized as before.
 */
export const STARTUP_JIT_POLICY = 8;

/** Compiles src/main.ts once into `outfile`; throws with the bundler's messages if it fails. */
async function compileOnce(arch: Arch, outfile: string, revision: string, bytecode: boolean, bytecodeOrder?: string): Promise<void> {
  const result = await Bun.build({
    entrypoints: [ENTRY],
    // The binary must not pick up a stray .env or bunfig.toml from whatever directory it runs in.
    compile: { target: TARGETS[arch], outfile, autoloadDotenv: false, autoloadBunfig: false, bytecodeOrder, jitPolicy: STARTUP_JIT_POLICY },
    bytecode,
    minify: true,
    sourcemap: "none",
    define: { RELAY_BUILD_REVISION: JSON.stringify(revision) },
    plugins: [startupTrims()],
    throw: false,
  });
  if (!result.success) throw new AggregateError(result.logs, `build: compiling ${outfile} failed: ${result.logs.map((l) => l.message).join("; ")}`);
}

/**
 * Builds dist/tokenplace-relay-linux-<arch> (in `outdir`): what `npm run build` ships, and what a
 * bench or test builds to compare with. Returns the path and how it was built.
 */
export async function buildRelay(arch: Arch, outdir: string, revision?: string): Promise<{ outfile: string; bytecode: boolean; ordered: boolean; ms: number }> {
  const rev = revision ?? (await buildRevision());
  mkdirSync(outdir, { recursive: true });
  const outfile = `${outdir}/tokenplace-relay-linux-${arch}`;
  const t0 = performance.now();
  // Bytecode: the module graph ships precompiled (JavaScriptCore bytecode), which more than
  // halves the binary's start-up (measured: ~115 ms -> ~45 ms of CPU to the first /healthz); it
  // needs an entry without top-level await (src/main.ts). Only for the build machine's own
  // architecture: cross-compiled bytecode crashes at launch (oven-sh/bun#18416), so a
  // cross-compiled binary starts from source.
  const bytecode = arch === process.arch;
  await compileOnce(arch, outfile, rev, bytecode);
  // Bytecode layout: the embedded module graph is mapped from the binary, and every page of it
  // that start-up touches stays resident. Built twice: the first binary runs once and records the
  // functions a start and a first request use (BUN_BYTECODE_ORDER_OUT), the second places their
  // bytecode together at the front (bytecodeOrder). Measured: ~1.3 MiB less RSS idle.
  let ordered = false;
  if (bytecode) {
    const profile = join(mkdtempSync(join(tmpdir(), "relay-order-")), "order.txt");
    const why = await recordBytecodeOrder(outfile, profile);
    if (why === undefined) {
      await compileOnce(arch, outfile, rev, bytecode, profile);
      ordered = true;
    } else console.warn(`build: ${outfile} keeps the default bytecode layout (${why})`);
    rmSync(dirname(profile), { recursive: true, force: true });
  }
  return { outfile, bytecode, ordered, ms: Math.round(performance.now() - t0) };
}

async function main(): Promise<void> {
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
  const revision = await buildRevision();
  for (const arch of arches) {
    const b = await buildRelay(arch, outdir, revision);
    console.log(`built ${b.outfile} (${pkg.version}, ${revision}${b.bytecode ? `, bytecode${b.ordered ? " in start-up order" : ""}` : ""}) in ${b.ms} ms`);
  }
}

if (import.meta.main) await main();
