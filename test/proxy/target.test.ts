import { describe, expect, test } from "bun:test";
import { RelayError } from "../../src/errors.ts";
import { buildUpstreamUrl, createTargetMatcher } from "../../src/proxy/target.ts";

const m = createTargetMatcher(["/api/", "/v1/", "/api/v2/"]);

describe("prefix matching", () => {
  test("matches by prefix, longest first, case-sensitive", () => {
    expect(m.matchPrefix("/api/v1/chat/completions")).toBe("/api/");
    expect(m.matchPrefix("/api/v2/x")).toBe("/api/v2/");
    expect(m.matchPrefix("/v1/models")).toBe("/v1/");
    for (const p of ["/api", "/apix/y", "/API/x", "/", "/metrics", "//api/x"]) expect(m.matchPrefix(p)).toBeUndefined();
  });
});

describe("resolve", () => {
  const bad = (url: string) => {
    try {
      m.resolve(url);
    } catch (err) {
      return err instanceof RelayError ? `${err.status} ${err.code}` : String(err);
    }
    return "accepted";
  };

  test("keeps the normalised path and the query exactly, drops the fragment", () => {
    expect(m.resolve("http://evil.example:1/api/v1/chat?stream=true&x=%2f#frag")).toEqual({
      prefix: "/api/",
      path: "/api/v1/chat",
      search: "?stream=true&x=%2f",
    });
  });

  test("a relative req.url (Bun leaves it relative for a Host with @ or /) still resolves to a path only", () => {
    expect(m.resolve("/v1/models").path).toBe("/v1/models");
  });

  test("refuses encoded separators, dot segments, control characters, bad escapes", () => {
    for (const u of ["http://h/api/..%2fx", "http://h/api/a%2Fb", "http://h/api/a%5cb", "http://h/api/%00", "http://h/api/%zz", "http://h/api/%2e%2e%2fx"]) {
      expect({ u, r: bad(u) }).toEqual({ u, r: "400 bad_path" });
    }
    expect(bad("http://h/metrics")).toBe("400 bad_path");
  });
});

describe("buildUpstreamUrl", () => {
  const t = (path: string, search = "") => ({ prefix: "/api/", path, search });

  test("the host always comes from the configured upstream", () => {
    const base = new URL("http://gpu-server:3000");
    expect(buildUpstreamUrl(base, t("/api/x", "?a=1")).href).toBe("http://gpu-server:3000/api/x?a=1");
    expect(buildUpstreamUrl(base, t("/api//evil.example/x")).origin).toBe("http://gpu-server:3000");
  });

  test("an upstream with a base path keeps it", () => {
    expect(buildUpstreamUrl(new URL("https://gpu.example/base/"), t("/v1/models")).href).toBe("https://gpu.example/base/v1/models");
  });
});
