// What the stores keep from a body is charged at 1 byte per ASCII character (storedStringBytes):
// that holds only if those strings really are 1-byte strings in JavaScriptCore. A body holding one
// non-ASCII character anywhere is decoded to a 16-bit string, and JSON.parse cuts 16-bit strings
// from it, ASCII fields included; the validators must hand the stores 1-byte copies of those.
import * as jsc from "bun:jsc";
import { describe, expect, test } from "bun:test";
import { checkFieldLengths, LEGACY_FIELD_BOUNDS } from "../../src/broker/validate.ts";
import { ManualClock } from "../../src/clock.ts";
import { readJsonObject } from "../../src/http/json.ts";
import { MemoryV1Store } from "../../src/v1/index.ts";
import { storedStringBytes } from "../../src/v1/memory/state.ts";
import { DEFAULT_CAPABILITIES, ciphertextOf, envelopeOf } from "../../src/v1/validate.ts";
import { TEST_LIMITS, recorder } from "./backends.ts";

/** JavaScriptCore's own description of a value (bun:jsc exports it, its type declarations do not). */
const jscDescribe = (jsc as unknown as { describe(v: unknown): string }).describe;
/** "String,8Bit:(1),length:(...)" for a 1-byte string. */
const width = (s: unknown) => (typeof s === "string" ? (jscDescribe(s).includes("8Bit:(1)") ? "1-byte" : "2-byte") : typeof s);

/** A body read the way the routes read it (bytes, decoded, shape-checked, parsed). */
const parsed = async (body: unknown) => {
  const req = new Request("http://relay.test/", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return (await readJsonObject(req, 1 << 20))!;
};

const B64 = "QUJD".repeat(256);
const KEY = "LS0tLS1CRUdJTiBQVUJMSUMgS0VZLS0tLS0K".repeat(16);

describe("the strings a store keeps are 1-byte strings whenever they are ASCII", () => {
  test("control: without the copy, an ASCII field of a non-ASCII body is a 2-byte string", async () => {
    // If this stops holding (a runtime that narrows on its own), the copies below are only redundant.
    const body = await parsed({ chat_history: B64, request_id: "€" });
    expect(width(body.chat_history)).toBe("2-byte");
  });

  test("API v1 envelopes: every kept ASCII field, whichever field held the non-ASCII character", async () => {
    // chat_history is not kept when ciphertext is sent too (ciphertext wins, spec §6.6).
    for (const odd of ["request_id", "protocol", "cancel_token", "server_public_key", "chat_history"]) {
      const raw = {
        server_public_key: KEY, client_public_key: KEY, ciphertext: B64, chat_history: B64, cipherkey: B64.slice(0, 344), iv: "aXY=",
        request_id: "chat-client-1", protocol: "tokenplace_api_v1_relay_e2ee", version: 1, cancel_token: "proof",
        [odd]: "é€",
      };
      const body = await parsed(raw);
      const e = envelopeOf(body, ciphertextOf(body), () => new Error("missing key"));
      const kept = { client_public_key: e.client_public_key, chat_history: e.chat_history, cipherkey: e.cipherkey, iv: e.iv, request_id: e.request_id, protocol: e.protocol };
      const widths = Object.fromEntries(Object.entries(kept).map(([k, v]) => [k, width(v)]));
      const keptOdd = odd === "chat_history" ? undefined : odd;
      const expected = Object.fromEntries(Object.keys(kept).map((k) => [k, k === keptOdd ? "2-byte" : "1-byte"]));
      expect({ odd, widths }).toEqual({ odd, widths: expected });
      // Unchanged, character for character.
      for (const [k, v] of Object.entries(kept)) expect(v).toBe(k === keptOdd ? "é€" : (raw as Record<string, unknown>)[k === "chat_history" ? "ciphertext" : k] as string);
    }
  });

  test("API v1 progress: the memory store keeps 1-byte copies of an update cut from a non-ASCII body", async () => {
    const store = new MemoryV1Store(TEST_LIMITS, new ManualClock(), recorder());
    const caps = { ...DEFAULT_CAPABILITIES, supported_model_ids: ["qwen3-8b-instruct"] };
    expect((await store.register("node-key", caps, "digest")).kind).toBe("registered");
    const env = { client_public_key: "client-key", chat_history: B64, cipherkey: "a2V5", iv: "aXY=", request_id: "r1" };
    expect(await store.enqueue("node-key", env, undefined, 60_000, 10)).toBe("queued");
    expect((await store.claim("node-key", undefined, 0)).kind).toBe("work");
    const body = await parsed({ client_public_key: "client-key", request_id: "r1", protocol: "tokenplace_api_v1_relay_e2ee", version: 1, ciphertext: B64, cipherkey: "a2V5", iv: "aXY=", server_public_key: "node-key", control_credential: "€" });
    expect(width(body.ciphertext)).toBe("2-byte");
    const f = body as Record<string, string>;
    const update = { client_public_key: f.client_public_key!, request_id: f.request_id!, protocol: f.protocol!, version: 1, ciphertext: f.ciphertext!, cipherkey: f.cipherkey!, iv: f.iv! };
    expect(await store.progress("node-key", "digest", update)).toBe("accepted");
    const r = await store.retrieve("client-key", "r1");
    if (r.kind !== "pending" || !r.progress) throw new Error(`no progress: ${r.kind}`);
    expect([r.progress.ciphertext, r.progress.cipherkey, r.progress.iv, r.progress.request_id].map(width)).toEqual(["1-byte", "1-byte", "1-byte", "1-byte"]);
    expect(r.progress).toEqual(update);
  });

  test("legacy: /faucet and /source fields, whatever extra key held the non-ASCII character", async () => {
    const faucet = await parsed({ server_public_key: KEY, client_public_key: KEY, chat_history: B64, cipherkey: "a2V5", iv: "aXY=", note: { x: ["€"] } });
    checkFieldLengths(faucet, LEGACY_FIELD_BOUNDS.faucet);
    expect(["server_public_key", "client_public_key", "chat_history", "cipherkey", "iv"].map((k) => width(faucet[k]))).toEqual(Array(5).fill("1-byte"));
    expect(faucet.chat_history).toBe(B64);

    const source = await parsed({ client_public_key: KEY, chat_history: B64, cipherkey: "a2V5", iv: "é€" });
    checkFieldLengths(source, LEGACY_FIELD_BOUNDS.source);
    expect(["client_public_key", "chat_history", "cipherkey", "iv"].map((k) => width(source[k]))).toEqual(["1-byte", "1-byte", "1-byte", "2-byte"]);
    expect(source.iv).toBe("é€");
  });
});

describe("storedStringBytes", () => {
  test("is exactly the larger of the UTF-8 JSON (what Valkey keeps) and 2 bytes per unit once not ASCII (what the process keeps)", () => {
    // Pieces that take each branch: plain, Latin-1, BMP, astral pairs, lone halves, escapes short and long.
    const PIECES = ["QUJD", "A", "é", "€", "𝄞", "\ud800", "\udc00", "\u0001", "\n", '"', "\\", "\u007f", "\u2028"];
    let seed = 7;
    const next = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31);
    for (let i = 0; i < 2_000; i++) {
      let s = "";
      const n = next() % 12;
      for (let k = 0; k < n; k++) s += PIECES[next() % (i % 3 === 0 ? 2 : PIECES.length)]!;
      const json = Buffer.byteLength(JSON.stringify(s)) - 2;
      const memory = /[^\x00-\x7f]/.test(s) ? 2 * s.length : s.length;
      expect({ s, bytes: storedStringBytes(s) }).toEqual({ s, bytes: Math.max(json, memory) });
    }
  });
});
