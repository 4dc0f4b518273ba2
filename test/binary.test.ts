import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fakeKey, job } from "./helpers/relay.ts";
import { ROOT, run, spawnRelay, type Spawned } from "./helpers/spawn.ts";

// End-to-end against the compiled binary (npm test builds it first).
const BIN = join(ROOT, "dist/tokenplace-relay-linux-x64");
const have = existsSync(BIN);
if (!have) {
  if (process.env.CI === "true") throw new Error(`${BIN} is missing: run npm run build (CI must build the binary)`);
  console.warn(`SKIP binary tests: ${BIN} not built (npm run build)`);
}

describe.skipIf(!have)("compiled binary", () => {
  let relay: Spawned | undefined;
  afterAll(() => relay?.kill());

  test("--version names the version and the build revision", async () => {
    const r = await run([BIN, "--version"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^tokenplace-relay \d+\.\d+\.\d+ \([0-9a-f]{7,}|unknown\)/);
    expect(r.stdout).not.toContain("(dev)");
  });

  test("--check-config lists every problem at once and exits 2", async () => {
    const r = await run([BIN, "--check-config"], { RELAY_PORT: "x", LOG_LEVEL: "loud", RELAY_LONG_POLL_MS: "99999" });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("3 problems");
    for (const name of ["RELAY_PORT", "LOG_LEVEL", "RELAY_LONG_POLL_MS"]) expect(r.stderr).toContain(name);
  });

  test("--check-config on a valid environment prints the settings without secrets, and warns about service links", async () => {
    const token = "a-long-registration-token-123";
    const r = await run([BIN, "--check-config"], { TOKEN_PLACE_RELAY_SERVER_TOKEN: token, TOKENPLACE_RELAY_SERVICE_HOST: "10.0.0.1" });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).ok).toBe(true);
    expect(r.stdout).not.toContain(token);
    expect(r.stderr).toContain("TOKENPLACE_RELAY_SERVICE_HOST is set but is not a relay setting");
  });

  test("starting with a bad configuration exits 2 before listening", async () => {
    const r = await run([BIN], { RELAY_PORT: "-1", RELAY_MAX_NODES: "0" });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("RELAY_PORT");
    expect(r.stderr).toContain("RELAY_MAX_NODES");
  });

  test("a second relay on a port already in use fails with exit 1 instead of sharing the port", async () => {
    const first = await spawnRelay({ TOKENPLACE_RELAY_ONLY: "true" }, { cmd: [BIN] });
    try {
      const second = await run([BIN], { RELAY_HOST: "127.0.0.1", RELAY_PORT: String(first.port), TOKENPLACE_RELAY_ONLY: "true" }, 5_000);
      expect(second.code).toBe(1);
      const line = JSON.parse(second.stdout.trim().split("\n").pop()!) as Record<string, unknown>;
      expect(line).toMatchObject({ level: "fatal", msg: "cannot listen", port: first.port, code: "EADDRINUSE" });
      // The first one still answers, alone on its port.
      expect((await fetch(`${first.url}/livez`)).status).toBe(200);
    } finally {
      first.kill();
    }
  });

  test("a stray .env or bunfig.toml in the working directory is ignored", async () => {
    const dir = mkdtempSync(join(tmpdir(), "relay-cwd-"));
    writeFileSync(join(dir, ".env"), "RELAY_PORT=not-a-number\n");
    writeFileSync(join(dir, "bunfig.toml"), "this is = [not toml\n");
    const proc = Bun.spawn([BIN, "--check-config"], { cwd: dir, env: { PATH: "/usr/bin:/bin" }, stdout: "pipe", stderr: "pipe" });
    expect(await proc.exited).toBe(0);
  });

  test("serves the broker protocol with a held /sink, answers healthcheck, exits 0 on SIGTERM", async () => {
    relay = await spawnRelay({ TOKENPLACE_RELAY_ONLY: "true", TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES: "true", LOG_LEVEL: "info" }, { cmd: [BIN] });
    const node = fakeKey("node");
    const held = fetch(`${relay.url}/sink`, { method: "POST", body: JSON.stringify({ server_public_key: node }) });
    await Bun.sleep(100);
    const posted = await fetch(`${relay.url}/faucet`, { method: "POST", body: JSON.stringify(job(node, { chat_history: "bin" })) });
    expect(posted.status).toBe(200);
    expect(((await (await held).json()) as { chat_history: string }).chat_history).toBe("bin");

    const ok = await run([BIN, "healthcheck"], { RELAY_PORT: String(relay.port) });
    expect(ok.code).toBe(0);
    const viaUrl = await run([BIN, "healthcheck", "--url", `${relay.url}/healthz`]);
    expect(viaUrl.code).toBe(0);

    relay.proc.kill("SIGTERM");
    expect(await relay.proc.exited).toBe(0);
    const dead = await run([BIN, "healthcheck"], { RELAY_PORT: String(relay.port) });
    expect(dead.code).toBe(1);
    expect(dead.stderr).toContain("unreachable");
  });
});
