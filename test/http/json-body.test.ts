import { describe, expect, test } from "bun:test";
import { readJsonObject } from "../../src/http/json.ts";

/**
 * readJsonObject reads a body with a declared length as text (Bun's decoder) and a chunked one as
 * bytes (TextDecoder): both must give the same object for the same bytes, BOM and invalid UTF-8
 * included.
 */
const declared = (bytes: Uint8Array) =>
  new Request("http://relay.test/sink", { method: "POST", body: bytes, headers: { "content-type": "application/json", "content-length": String(bytes.byteLength) } });
const chunked = (bytes: Uint8Array) =>
  new Request("http://relay.test/sink", {
    method: "POST",
    body: new ReadableStream({
      start(c) {
        // Split inside a multi-byte sequence on purpose.
        c.enqueue(bytes.subarray(0, Math.floor(bytes.byteLength / 2)));
        c.enqueue(bytes.subarray(Math.floor(bytes.byteLength / 2)));
        c.close();
      },
    }),
    headers: { "content-type": "application/json" },
  });

describe("readJsonObject", () => {
  const enc = new TextEncoder();
  const cases: Array<[string, Uint8Array]> = [
    ["plain", enc.encode('{"server_public_key":"abc","n":1}')],
    ["BOM first", new Uint8Array([0xef, 0xbb, 0xbf, ...enc.encode('{"a":1}')])],
    ["invalid UTF-8 in a string", new Uint8Array([...enc.encode('{"a":"'), 0xff, 0xc3, 0x28, ...enc.encode('"}')])],
    ["non-ASCII", enc.encode('{"a":"é☃𝄞"}')],
    ["empty", new Uint8Array([])],
    ["not an object", enc.encode("[1,2]")],
    ["not JSON", enc.encode("{nope")],
  ];
  for (const [name, bytes] of cases) {
    test(`${name}: declared and chunked bodies parse alike`, async () => {
      const a = await readJsonObject(declared(bytes), 1 << 20);
      const b = await readJsonObject(chunked(bytes), 1 << 20);
      expect(a).toEqual(b);
      if (name === "invalid UTF-8 in a string") expect(a).toEqual({ a: "\ufffd\ufffd(" });
      if (name === "BOM first") expect(a).toEqual({ a: 1 });
      if (name === "empty" || name === "not an object" || name === "not JSON") expect(a).toBeUndefined();
    });
  }
});
