import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildRelay, inPackage, PINO_TRANSPORT_STUB_MESSAGE, STARTUP_TRIMS, startupTrims, type StartupTrim } from "../scripts/build.ts";
import { BUN, ROOT, spawnRelay, type Spawned } from "./helpers/spawn.ts";

// scripts/build.ts: what the relay's binary leaves out of its start-up (STARTUP_TRIMS), and that
// the binary built with it starts and logs exactly as the relay run from source.

const dir = mkdtempSync(join(tmpdir(), "relay-build-test-"));
const running: Spawned[] = [];
afterAll(() => {
  for (const r of running) r.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

/** Bundles `entry` for Bun (not compiled) into its own directory; the bundle's text and path. */
async function bundle(name: string, entry: string, trims?: readonly StartupTrim[]): Promise<{ text: string; path: string }> {
  const outdir = join(dir, name);
  const r = await Bun.build({ entrypoints: [entry], target: "bun", outdir, plugins: trims === undefined ? [] : [startupTrims(trims)], throw: false });
  if (!r.success) throw new AggregateError(r.logs, r.logs.map((l) => l.message).join("; "));
  const path = r.outputs[0]!.path;
  return { text: readFileSync(path, "utf8"), path };
}

async function runJson(path: string): Promise<Record<string, unknown>> {
  const proc = Bun.spawn([BUN, path], { cwd: dir, env: { PATH: process.env.PATH ?? "/usr/bin:/bin" }, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`${path} exited ${code}: ${err}`);
  return JSON.parse(out) as Record<string, unknown>;
}

describe("start-up trims", () => {
  test("pino without its transports: lines are unchanged, and asking for a transport fails with a clear error", async () => {
    const entry = join(dir, "pino-entry.cjs");
    writeFileSync(
      entry,
      `const pino = require(${JSON.stringify(join(ROOT, "node_modules/pino/pino.js"))});
const out = [];
const log = pino({ base: { service: "t" }, timestamp: false, formatters: { level: (label) => ({ level: label }) } }, { write: (l) => out.push(l) });
log.info({ a: 1, err: new Error("boom") }, "hello");
log.child({ reqId: "r1" }).warn("child");
// A destination on a descriptor, as the relay's (src/log.ts): sonic-boom with its trimmed requires.
const file = require("node:path").join(__dirname, "dest-" + process.pid + ".log");
const dest = pino.destination({ dest: require("node:fs").openSync(file, "w"), sync: true });
pino({ base: null, timestamp: false }, dest).info("to a descriptor");
dest.flushSync();
out.push(require("node:fs").readFileSync(file, "utf8"), String(dest instanceof require("node:events").EventEmitter));
const ended = new Promise((resolve) => dest.on("close", resolve));
dest.end();
const errors = [];
try { pino.transport({ target: "pino/file" }); } catch (e) { errors.push(e.message); }
try { pino({ transport: { target: "pino/file" } }); } catch (e) { errors.push(e.message); }
ended.then(() => console.log(JSON.stringify({ out, errors })));
`,
    );
    const untrimmed = await bundle("pino-untrimmed", entry);
    const trimmed = await bundle("pino-trimmed", entry, STARTUP_TRIMS);
    // The transport machinery (thread-stream, real-require's users) is in the bundle only without the trims.
    expect(untrimmed.text).toContain("// node_modules/thread-stream/");
    expect(trimmed.text).not.toContain("// node_modules/thread-stream/");
    expect(trimmed.text).not.toContain('require("worker_threads")');

    const got = (await runJson(trimmed.path)) as { out: string[]; errors: string[] };
    expect(got.errors).toEqual([PINO_TRANSPORT_STUB_MESSAGE, PINO_TRANSPORT_STUB_MESSAGE]);
    // The same lines as pino itself, run from node_modules without a bundler.
    const plain = join(dir, "pino-plain.cjs");
    writeFileSync(plain, readFileSync(entry, "utf8").replace(/const errors = \[\];[^]*$/, "ended.then(() => console.log(JSON.stringify({ out })));\n"));
    const expected = (await runJson(plain)) as { out: string[] };
    expect(got.out.map((l) => l.replace(/"stack":"[^"]*"/, ""))).toEqual(expected.out.map((l) => l.replace(/"stack":"[^"]*"/, "")));
    expect(got.out[0]).toStartWith('{"level":"info","service":"t","a":1,"err":{"type":"Error","message":"boom"');
    expect(got.out.slice(2)).toEqual(['{"level":30,"msg":"to a descriptor"}\n', "true"]);
  });

  test("a deferred module is evaluated on the first use of its export, and then behaves as itself", async () => {
    const pkgs = join(dir, "deferred", "node_modules");
    mkdirSync(join(pkgs, "fake-importer"), { recursive: true });
    mkdirSync(join(pkgs, "fake-dep"), { recursive: true });
    writeFileSync(
      join(pkgs, "fake-dep", "index.js"),
      `globalThis.fakeDepLoads = (globalThis.fakeDepLoads ?? 0) + 1;
class Thing { constructor(v) { this.v = v; } }
module.exports = Object.assign(function twice(x) { return x * 2; }, { value: 42, Thing });
`,
    );
    writeFileSync(join(pkgs, "fake-importer", "index.js"), `const dep = require('fake-dep');\nmodule.exports = { dep, loadsAtImport: globalThis.fakeDepLoads ?? 0 };\n`);
    const entry = join(dir, "deferred", "entry.cjs");
    writeFileSync(
      entry,
      `const { dep, loadsAtImport } = require("fake-importer");
const loadsBeforeUse = globalThis.fakeDepLoads ?? 0;
const value = dep.value;
const thing = new dep.Thing(3);
console.log(JSON.stringify({ loadsAtImport, loadsBeforeUse, value, called: dep(21), v: thing.v, isThing: thing instanceof dep.Thing, has: "value" in dep, loads: globalThis.fakeDepLoads }));
`,
    );
    const trims: StartupTrim[] = [{ importer: inPackage("fake-importer", "index.js"), specifier: "fake-dep", kind: "defer", why: "test" }];
    expect(await runJson((await bundle("deferred-plain", entry)).path)).toMatchObject({ loadsAtImport: 1, loadsBeforeUse: 1 });
    expect(await runJson((await bundle("deferred", entry, trims)).path)).toEqual({ loadsAtImport: 0, loadsBeforeUse: 0, value: 42, called: 42, v: 3, isThing: true, has: true, loads: 1 });
  });

  test("a trim whose importer no longer requires its module fails the build", async () => {
    const entry = join(dir, "deferred", "entry.cjs");
    const stale: StartupTrim[] = [{ importer: inPackage("fake-importer", "index.js"), specifier: "gone-dep", kind: "defer", why: "test" }];
    expect(bundle("stale", entry, stale)).rejects.toThrow("no longer requires gone-dep");
  });

  test("every trim applies to the relay's own bundle", async () => {
    const { text } = await bundle("relay", join(ROOT, "src/main.ts"), STARTUP_TRIMS);
    for (let i = 0; i < STARTUP_TRIMS.length; i++) expect(text).toContain(`// relay-trim:relay-trim:${i}\n`);
  });
});

describe("the compiled relay built with the trims", () => {
  test(
    "starts, logs the same lines as the relay run from source, and stops on SIGTERM",
    async () => {
      const arch = process.arch === "arm64" ? "arm64" : "x64";
      const { outfile } = await buildRelay(arch, join(dir, "dist"), "test");
      const env = { LOG_LEVEL: "info", TOKENPLACE_RELAY_UPSTREAM_URL: "http://127.0.0.1:9", BUN_CONFIG_MAX_HTTP_REQUESTS: "256" };
      const lines = async (cmd?: string[]) => {
        const relay = await spawnRelay(env, cmd ? { cmd } : {});
        running.push(relay);
        expect((await fetch(`${relay.url}/livez`)).status).toBe(200);
        // Probes are logged at debug; an unknown path gets an info request line.
        expect((await fetch(`${relay.url}/no-such-path`)).status).toBe(404);
        await relay.waitForLine((l) => l.includes('"msg":"request"'));
        relay.kill("SIGTERM");
        expect(await relay.closed()).toBe(0);
        // What differs between any two starts: time, port, the build's revision, request ids, durations.
        return relay.lines.map((l) => {
          const j = JSON.parse(l) as Record<string, unknown>;
          delete j.time;
          delete j.port;
          delete j.revision;
          delete j.durationMs;
          delete j.reqId;
          if (j.config) (j.config as Record<string, unknown>).port = 0;
          return j;
        });
      };
      const compiled = await lines([outfile]);
      const source = await lines();
      expect(compiled.map((j) => j.msg)).toContain("listening");
      expect(compiled.map((j) => j.msg)).toContain("stopped");
      // As sets of lines: the upstream probe's warning is asynchronous, so its place may vary.
      const sorted = (js: Record<string, unknown>[]) => js.map((j) => JSON.stringify(j)).sort();
      expect(sorted(compiled)).toEqual(sorted(source));
    },
    120_000,
  );
});
