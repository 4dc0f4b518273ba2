// The demo's WebCrypto envelopes: round trips, the wire format token.place peers expect, and
// what tampering does. node:crypto (OpenSSL) serves as an independent second implementation.
import { describe, expect, test } from "bun:test";
import * as nodeCrypto from "node:crypto";
import {
  decryptJson,
  decryptText,
  encryptJson,
  encryptText,
  exportPublicKey,
  fromB64,
  generateKeyPair,
  importPublicKey,
  toB64,
  type DemoKeyPair,
  type Envelope,
} from "../src/demo/crypto.ts";

const alice: DemoKeyPair = await generateKeyPair();
const mallory: DemoKeyPair = await generateKeyPair();

async function nodePrivateKey(pair: DemoKeyPair): Promise<nodeCrypto.KeyObject> {
  const pkcs8 = Buffer.from(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  return nodeCrypto.createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" });
}

/** Flips one bit of a base64 field's decoded bytes. */
function flip(b64: string, index: number): string {
  const bytes = fromB64(b64);
  bytes[index % bytes.length]! ^= 0x01;
  return toB64(bytes);
}

describe("public keys", () => {
  test("travel as base64 of an SPKI PEM with 64-column lines", async () => {
    const pem = Buffer.from(alice.publicKeyB64, "base64").toString("utf8");
    expect(pem.startsWith("-----BEGIN PUBLIC KEY-----\n")).toBe(true);
    expect(pem.endsWith("\n-----END PUBLIC KEY-----\n")).toBe(true);
    const body = pem.split("\n").slice(1, -2);
    expect(body.every((line) => line.length <= 64)).toBe(true);
    // OpenSSL reads it as a 2048-bit RSA key.
    const key = nodeCrypto.createPublicKey(pem);
    expect(key.asymmetricKeyDetails?.modulusLength).toBe(2048);
  });

  test("import/export round trip is byte-identical", async () => {
    const imported = await importPublicKey(alice.publicKeyB64);
    expect(await exportPublicKey(imported)).toBe(alice.publicKeyB64);
  });

  test("garbage is refused", async () => {
    await expect(importPublicKey(toB64(new TextEncoder().encode("not a key")))).rejects.toThrow();
    expect(() => fromB64("abc$")).toThrow("invalid base64");
  });
});

describe.each(["AES-CBC", "AES-GCM"] as const)("%s envelopes", (mode) => {
  test("round trip: text, unicode, empty and large", async () => {
    for (const text of ["hello", "héllo 🌍 — ünïcode", "", "x".repeat(200_000)]) {
      const env = await encryptText(alice.publicKeyB64, text, mode);
      expect(await decryptText(alice.privateKey, env)).toBe(text);
    }
  });

  test("JSON chat histories round trip and the wire fields are base64, never plaintext", async () => {
    const history = [{ role: "user", content: "a secret prompt" }];
    const env = await encryptJson(alice.publicKey, history, mode);
    for (const field of [env.chat_history, env.cipherkey, env.iv]) {
      expect(field).toMatch(/^[A-Za-z0-9+/]+={0,2}$/);
      expect(field).not.toContain("secret");
    }
    expect(fromB64(env.iv).byteLength).toBe(mode === "AES-CBC" ? 16 : 12);
    expect(fromB64(env.cipherkey).byteLength).toBe(256); // one RSA-2048 block
    expect(await decryptJson(alice.privateKey, env)).toEqual(history);
  });

  test("every message gets a fresh key and IV", async () => {
    const a = await encryptText(alice.publicKeyB64, "same text", mode);
    const b = await encryptText(alice.publicKeyB64, "same text", mode);
    expect(a.iv).not.toBe(b.iv);
    expect(a.cipherkey).not.toBe(b.cipherkey);
    expect(a.chat_history).not.toBe(b.chat_history);
  });

  test("the wrong private key cannot open it", async () => {
    const env = await encryptText(alice.publicKeyB64, "for alice only", mode);
    await expect(decryptText(mallory.privateKey, env)).rejects.toThrow();
  });

  test("a tampered cipherkey is rejected (OAEP integrity)", async () => {
    const env = await encryptText(alice.publicKeyB64, "payload", mode);
    await expect(decryptText(alice.privateKey, { ...env, cipherkey: flip(env.cipherkey, 100) })).rejects.toThrow();
  });
});

describe("AES-GCM tamper detection", () => {
  const text = JSON.stringify([{ role: "user", content: "do not alter me" }]);
  test.each([0, 5, 20])("a flipped ciphertext bit at byte %i is rejected", async (index) => {
    const env = await encryptText(alice.publicKeyB64, text, "AES-GCM");
    await expect(decryptText(alice.privateKey, { ...env, chat_history: flip(env.chat_history, index) })).rejects.toThrow();
  });

  test("a flipped IV bit is rejected", async () => {
    const env = await encryptText(alice.publicKeyB64, text, "AES-GCM");
    await expect(decryptText(alice.privateKey, { ...env, iv: flip(env.iv, 3) })).rejects.toThrow();
  });

  test("a swapped ciphertext from another message is rejected", async () => {
    const a = await encryptText(alice.publicKeyB64, text, "AES-GCM");
    const b = await encryptText(alice.publicKeyB64, text, "AES-GCM");
    await expect(decryptText(alice.privateKey, { ...a, chat_history: b.chat_history })).rejects.toThrow();
  });

  test("an IV of an unknown length is refused", async () => {
    const env = await encryptText(alice.publicKeyB64, text, "AES-GCM");
    await expect(decryptText(alice.privateKey, { ...env, iv: toB64(new Uint8Array(8)) })).rejects.toThrow("IV length");
  });
});

describe("compatibility with token.place's encrypt.py format (checked with OpenSSL)", () => {
  test("our CBC envelope opens with RSA-OAEP-SHA256 + AES-256-CBC/PKCS#7 and wraps base64(key)", async () => {
    const env = await encryptText(alice.publicKeyB64, "interop check", "AES-CBC");
    const wrapped = nodeCrypto.privateDecrypt(
      { key: await nodePrivateKey(alice), padding: nodeCrypto.constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" },
      fromB64(env.cipherkey),
    );
    const key = Buffer.from(wrapped.toString("utf8"), "base64");
    expect(key.byteLength).toBe(32);
    const decipher = nodeCrypto.createDecipheriv("aes-256-cbc", key, fromB64(env.iv));
    const plain = Buffer.concat([decipher.update(fromB64(env.chat_history)), decipher.final()]);
    expect(plain.toString("utf8")).toBe("interop check");
  });

  test.each([true, false])("an OpenSSL-made envelope opens (key wrapped as base64: %p)", async (b64Wrapped) => {
    const key = nodeCrypto.randomBytes(32);
    const iv = nodeCrypto.randomBytes(16);
    const cipher = nodeCrypto.createCipheriv("aes-256-cbc", key, iv);
    const ciphertext = Buffer.concat([cipher.update("made by openssl", "utf8"), cipher.final()]);
    const pem = Buffer.from(alice.publicKeyB64, "base64").toString("utf8");
    const cipherkey = nodeCrypto.publicEncrypt(
      { key: pem, padding: nodeCrypto.constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" },
      b64Wrapped ? Buffer.from(key.toString("base64")) : key,
    );
    const env: Envelope = { chat_history: toB64(ciphertext), cipherkey: toB64(cipherkey), iv: toB64(iv) };
    expect(await decryptText(alice.privateKey, env)).toBe("made by openssl");
  });
});
