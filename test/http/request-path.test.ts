import { describe, expect, test } from "bun:test";
import { RelayError } from "../../src/errors.ts";
import { requestPath, requestUrl } from "../../src/http/request-url.ts";
import { prng } from "../helpers/prng.ts";

/** The path as the target spells it: after any scheme and authority, before `?` or `#`. */
const rawPathOf = (raw: string) => {
  const abs = /^[a-z]+:\/\/[^/]*/i.exec(raw);
  const rest = abs ? raw.slice(abs[0].length) : raw;
  return rest.split(/[?#]/)[0]! || "/"; // no path at all: "/"
};

/**
 * requestPath skips URL parsing for plain paths; it must name the same path requestUrl does, or,
 * exactly when URL parsing would change the path's text (dot segments, `\`, characters to encode),
 * refuse it with invalid_path.
 */
describe("requestPath", () => {
  const same = (raw: string) => {
    let expected: string | Error;
    try {
      expected = requestUrl(raw).pathname;
    } catch (err) {
      expected = err as Error;
    }
    if (expected instanceof Error) return expect(() => requestPath(raw)).toThrow(TypeError);
    const changed = expected !== rawPathOf(raw);
    let got: string | Error;
    try {
      got = requestPath(raw);
    } catch (err) {
      got = err as Error;
    }
    if (changed) expect([raw, got instanceof RelayError ? got.code : got]).toEqual([raw, "invalid_path"]);
    else expect([raw, got]).toEqual([raw, expected]);
  };

  test("the forms of req.url Bun produces", () => {
    for (const raw of [
      "http://relay.test/api/v1/relay/requests",
      "http://relay.test/api/v1/relay/servers/next?model=m#f",
      "http://relay.test/x#frag?not-a-query",
      "http://relay.test",
      "http://relay.test/",
      "http://relay.test//api/v1/meta",
      "http://[::1/api/v1/meta",
      "http://relay:99999/sink",
      "/sink?x",
      "//evil.example/x",
      "http://relay.test/a/./b/../c",
      "http://relay.test/%2e%2e/x",
      "http://relay.test/caf\u00e9",
      "http://relay.test/a b",
      "http://relay.test/a\\b",
      "relay:443",
    ]) same(raw);
  });

  test("random targets over an alphabet rich in separators (seeded)", () => {
    const r = prng(0x5eed);
    const alphabet = ["/", "a", "Z", "0", "-", "_", ".", "..", "%", "%2f", "%2e", "?", "#", "\\", " ", "~", "é", ":", "@", "//"];
    for (let i = 0; i < 5_000; i++) {
      let path = "/";
      for (let n = r.int(12); n > 0; n--) path += r.pick(alphabet);
      same(r.int(4) === 0 ? path : `http://relay.test${path}`);
    }
  });
});
