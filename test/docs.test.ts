import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { loadConfig } from "../src/config/index.ts";
import { ROOT } from "./helpers/spawn.ts";

describe("README", () => {
  const readme = readFileSync(`${ROOT}README.md`, "utf8");

  test("documents every environment variable the relay reads", () => {
    const { known } = loadConfig({});
    const missing = [...known].filter((name) => !readme.includes(`| \`${name}\` |`));
    expect(missing).toEqual([]);
  });

  test("documents no variable the relay does not read (stale rows)", () => {
    const { known } = loadConfig({});
    const rows = [...readme.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]!);
    const extra = rows.filter((name) => !known.has(name) && name !== "BUN_CONFIG_MAX_HTTP_REQUESTS");
    expect(extra).toEqual([]);
  });

  test("quick start has the two one-line commands", () => {
    expect(readme).toContain("npm ci && npm start");
    expect(readme).toContain("npm ci && npm test");
  });
});
