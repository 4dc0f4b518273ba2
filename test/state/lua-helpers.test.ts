// What each Lua script carries of a helper library (luaHelpersFor), and the memo of public-key
// digests (memoDigest): both cut work per datastore call, neither may change what a call does.
import { describe, expect, test } from "bun:test";
import { sha256Hex } from "../../src/common/tokens.ts";
import { luaHelpersFor, memoDigest } from "../../src/state/redis.ts";
import { HOUSEKEEPING_SCRIPTS } from "../../src/v1/redis/housekeeping.ts";
import { NODE_SCRIPTS } from "../../src/v1/redis/nodes.ts";
import { REQUEST_SCRIPTS } from "../../src/v1/redis/requests.ts";
import { RESPONSE_SCRIPTS } from "../../src/v1/redis/responses.ts";
import { V1_LUA_HELPERS } from "../../src/v1/redis/state.ts";

const LIBRARY = `
local A, B = 'a', 'b'
-- c uses A only
local function c() return A end
local function d() return c() .. B end
local function unused() return 'never' end
local E = {}
local function e(x) E[#E + 1] = x end
`;

/** Every name a top-level `local` of the library defines. */
function definedNames(library: string): Set<string> {
  const names = new Set<string>();
  for (const m of library.matchAll(/^local\s+(?:function\s+([A-Za-z_]\w*)|([A-Za-z_][\w\s,]*?)\s*=)/gm)) {
    for (const n of (m[1] ?? m[2]!).split(",")) names.add(n.trim());
  }
  return names;
}

describe("luaHelpersFor", () => {
  test("keeps what the body names and what that names in turn, in the library's order", () => {
    const kept = luaHelpersFor(LIBRARY, "return d()");
    expect(kept).toContain("local A, B = 'a', 'b'");
    expect(kept).toContain("local function c()");
    expect(kept).toContain("local function d()");
    expect(kept).not.toContain("unused");
    expect(kept).not.toContain("local E");
    expect(kept.indexOf("local A, B")).toBeLessThan(kept.indexOf("local function c()"));
    expect(kept.indexOf("local function c()")).toBeLessThan(kept.indexOf("local function d()"));
  });

  test("a body that names nothing of the library gets none of it; one that names everything gets all", () => {
    expect(luaHelpersFor(LIBRARY, "return 1").trim()).toBe("");
    expect(luaHelpersFor(LIBRARY, "d() unused() e(1)").trim()).toBe(LIBRARY.trim());
  });

  test("every helper an API v1 script (or a helper it keeps) names is defined in what it carries", () => {
    const library = definedNames(V1_LUA_HELPERS);
    expect(library.size).toBeGreaterThan(40);
    for (const s of [...NODE_SCRIPTS, ...REQUEST_SCRIPTS, ...RESPONSE_SCRIPTS, ...HOUSEKEEPING_SCRIPTS]) {
      const kept = luaHelpersFor(V1_LUA_HELPERS, s.lua);
      const defined = definedNames(kept);
      const named = new Set((kept + s.lua).match(/[A-Za-z_]\w*/g));
      const missing = [...named].filter((n) => library.has(n) && !defined.has(n));
      expect({ script: s.name, missing }).toEqual({ script: s.name, missing: [] });
      // And the trimming is real: no transition needs the whole library.
      expect(defined.size).toBeLessThan(library.size);
    }
  });
});

describe("memoDigest", () => {
  const counting = () => {
    const calls: string[] = [];
    return { calls, digest: (s: string) => (calls.push(s), sha256Hex(s)) };
  };

  test("answers what the digest answers, computing each remembered string once", () => {
    const { calls, digest } = counting();
    const memo = memoDigest(digest, 4, 100);
    for (let i = 0; i < 3; i++) {
      expect(memo("node-key")).toBe(sha256Hex("node-key"));
      expect(memo("client-key")).toBe(sha256Hex("client-key"));
    }
    expect(calls).toEqual(["node-key", "client-key"]);
  });

  test("forgets the oldest past maxEntries, and never keeps a string longer than maxChars", () => {
    const { calls, digest } = counting();
    const memo = memoDigest(digest, 2, 10);
    memo("a");
    memo("b");
    memo("c"); // "a" is forgotten
    memo("b");
    memo("a");
    expect(calls).toEqual(["a", "b", "c", "a"]);
    const long = "x".repeat(11);
    expect(memo(long)).toBe(sha256Hex(long));
    memo(long);
    expect(calls.filter((c) => c === long)).toHaveLength(2);
  });
});
