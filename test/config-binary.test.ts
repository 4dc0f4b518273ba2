import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ROOT, run } from "./helpers/spawn.ts";

// The compiled binary's exit code and stderr for settings that used to start a relay silently.
const BIN = join(ROOT, "dist/tokenplace-relay-linux-x64");
const have = existsSync(BIN);
if (!have) {
  if (process.env.CI === "true") throw new Error(`${BIN} is missing: run npm run build (CI must build the binary)`);
  console.warn(`SKIP config binary tests: ${BIN} not built (npm run build)`);
}

describe.skipIf(!have)("--check-config refuses what would otherwise be ignored", () => {
  test("a misspelt registration token name exits 2 instead of opening registration", async () => {
    const r = await run([BIN, "--check-config"], { TOKENPLACE_RELAY_SERVER_TOKEN: "a-long-registration-token-123" });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("TOKENPLACE_RELAY_SERVER_TOKEN: not a relay setting; did you mean TOKEN_PLACE_RELAY_SERVER_TOKEN?");
    expect(r.stderr).not.toContain("a-long-registration-token-123");
    expect(r.stdout).toBe("");
  });

  test("every problem at once: a typo, a repeated upstream, a proxy setting in relay-only mode, a bad host", async () => {
    const r = await run([BIN, "--check-config"], {
      API_RATE_LIMT: "10/hour",
      TOKENPLACE_RELAY_ONLY: "true",
      TOKEN_PLACE_RELAY_UPSTREAMS: "http://a:1,http://a:1",
      RELAY_HOST: "not_a_host",
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("4 problems");
    for (const text of [
      "API_RATE_LIMT: not a relay setting; did you mean API_RATE_LIMIT?",
      'TOKEN_PLACE_RELAY_UPSTREAMS: lists "http://a:1" more than once',
      "TOKEN_PLACE_RELAY_UPSTREAMS is set but TOKENPLACE_RELAY_ONLY is true",
      "RELAY_HOST: not an IP address or host name",
    ]) {
      expect(r.stderr).toContain(text);
    }
  });
});
