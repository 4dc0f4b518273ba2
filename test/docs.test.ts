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

describe("README routes", () => {
  const readme = readFileSync(`${ROOT}README.md`, "utf8");

  test("every route the relay serves is in a route table, with its method", async () => {
    const { RELAY_ROUTE_SPECS } = await import("../src/routes.ts");
    // The chat page's assets are named by a hash of their bytes: the README names them with <hash>.
    const documented = (path: string) => path.replace(/^\/assets\/([a-z]+)\.[0-9a-f]{12}\.([a-z]+)$/, "/assets/$1.<hash>.$2");
    const missing = RELAY_ROUTE_SPECS.map((r) => `${r.method} ${documented(r.path)}`).filter((m) => !readme.includes(`\`${m}\``));
    expect(missing).toEqual([]);
  });

  test("the README never links to a path of one machine", () => {
    expect(readme).not.toMatch(/\.\.\/shared\/|\/work\/|\/tmp\//);
  });
});
