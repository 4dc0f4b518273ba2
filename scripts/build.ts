/**
 * Compiles the relay into standalone binaries: dist/tokenplace-relay-linux-{x64,arm64}.
 * Usage: bun run scripts/build.ts [--target x64|arm64]... [--outdir dist]
 *
 * Cross-compiles from the build machine (Bun fetches the target runtime from the npm registry);
 * never build inside an emulated arm64 environment (Bun aborts under QEMU-emulated builds).
 */
import { $ } from "bun";
import { mkdirSync } from "node:fs";
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
  await $`${process.execPath} build src/main.ts --compile ${bytecode} --minify --sourcemap=none --target=${TARGETS[arch]} --no-compile-autoload-dotenv --no-compile-autoload-bunfig --define RELAY_BUILD_REVISION=${JSON.stringify(revision)} --outfile ${outfile}`.quiet();
  console.log(`built ${outfile} (${pkg.version}, ${revision}${bytecode.length > 0 ? ", bytecode" : ""}) in ${Math.round(performance.now() - t0)} ms`);
}
