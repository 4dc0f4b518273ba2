import { describe, expect, test } from "bun:test";
import { requestPath, requestUrl } from "../../src/http/request-url.ts";
import { prng } from "../helpers/prng.ts";

/** requestPath skips URL parsing for plain paths; it must name the same path requestUrl does, always. */
describe("requestPath", () => {
  const same = (raw: string) => {
    let expected: string | Error;
    try {
      expected = requestUrl(raw).pathname;
    } catch (err) {
      expected = err as Error;
    }
    if (expected instanceof Error) expect(() => requestPath(raw)).toThrow(TypeError);
    else expect([raw, requestPath(raw)]).toEqual([raw, expected]);
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
