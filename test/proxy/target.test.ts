import { describe, expect, test } from "bun:test";
import { RelayError } from "../../src/errors.ts";
import { buildUpstreamUrl, createTargetMatcher, plainTarget, upstreamRoot } from "../../src/proxy/target.ts";

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

describe("plain targets are sliced, not parsed", () => {
  // The relay takes a plain path and query as they stand in req.url; the result must be exactly
  // what URL parsing gives, and anything parsing would change must take the parser.
  const parsed = (raw: string) => {
    const u = new URL(raw, "http://relay.invalid");
    return { path: u.pathname, search: u.search };
  };

  test("a plain target gives exactly what URL parsing gives", () => {
    for (const raw of [
      "http://127.0.0.1:8080/api/v1/chat/completions",
      "http://h/api/sse?n=40&gap=100",
      "http://h/api/x?",
      "http://h/api/x?a=%2f&b=c:d@e/f?g",
      "http://h/api/x?a=1#frag",
      "http://h/api/x#frag?no",
      "http://h/api/x?#",
      "/v1/models?limit=5",
      "http://h/",
      "http://[::1]:8080/api/x",
      "http://relay.example:65535/api/x",
    ]) {
      const plain = plainTarget(raw);
      expect({ raw, plain }).toEqual({ raw, plain: parsed(raw) });
    }
  });

  test("anything URL parsing would rewrite takes the parser", () => {
    for (const raw of [
      "http://h/api/./x",
      "http://h/api/%2e%2e/x",
      "http://h/api/a%2fb",
      "http://h/api\\x",
      "http://h/api/x y",
      "http://h/api/é",
      "http://h/api/x?q=a b",
      "http://h/api/x?q='",
      'http://h/api/x?q="<>',
      "http://h/api/x?q=é",
      "relay:443",
      // A Host the URL parser refuses (400 bad_path) must not slip through as X-Forwarded-Host.
      "http://h%2fx/v1/echo",
      "http://h%00/v1/echo",
      "http://h:99999/v1/echo",
      "http://[::1/v1/echo",
      "http://h:abc/v1/echo",
    ]) {
      expect({ raw, plain: plainTarget(raw) }).toEqual({ raw, plain: undefined });
    }
  });
});

describe("buildUpstreamUrl", () => {
  const t = (path: string, search = "") => ({ prefix: "/api/", path, search });

  test("the host always comes from the configured upstream", () => {
    const root = upstreamRoot(new URL("http://gpu-server:3000"));
    expect(buildUpstreamUrl(root, t("/api/x", "?a=1"))).toBe("http://gpu-server:3000/api/x?a=1");
    expect(new URL(buildUpstreamUrl(root, t("/api//evil.example/x"))).origin).toBe("http://gpu-server:3000");
    expect(new URL(buildUpstreamUrl(root, t("/api/@evil.example/x"))).origin).toBe("http://gpu-server:3000");
  });

  test("a path that would not start at the root is refused", () => {
    const root = upstreamRoot(new URL("http://gpu-server:3000"));
    for (const path of ["@evil.example/x", "evil", ""]) expect(() => buildUpstreamUrl(root, t(path))).toThrow(RelayError);
  });

  test("an upstream with a base path keeps it", () => {
    expect(buildUpstreamUrl(upstreamRoot(new URL("https://gpu.example/base/")), t("/v1/models"))).toBe("https://gpu.example/base/v1/models");
  });
});
