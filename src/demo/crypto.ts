/**
 * The hybrid encryption of token.place API v1 relay payloads (token.place API v1 relay spec §9), as
 * upstream `encrypt.py` implements it, so that these envelopes open in the real `server.py` and
 * `client.py` and theirs open here:
 *
 * - Key pairs are RSA-2048. A public key travels as base64 of its PEM SPKI text (64-column lines,
 *   trailing newline: what Python `cryptography` writes), and that exact string is the protocol's
 *   `server_public_key` / `client_public_key`.
 * - Each message gets a fresh AES-256 key and a 16-byte IV; the UTF-8 plaintext is encrypted with
 *   AES-256-CBC and PKCS#7 padding (WebCrypto pads exactly like `encrypt.py`'s `pkcs7_pad`).
 * - The RSA layer wraps the base64 text of the AES key (44 bytes), not the raw 32 bytes: upstream
 *   does that for JSEncrypt, whose decrypt returns a string.
 * - Wrapping is RSA-OAEP with SHA-256 (MGF1-SHA-256, no label) client -> node, like `client.py`, and
 *   RSA PKCS#1 v1.5 node -> client, like upstream's `CryptoManager.encrypt_message` (browser
 *   compatibility). Receivers try OAEP first, then v1.5, like `encrypt.py`'s `_decrypt_session_key`.
 * - On the wire each of ciphertext, wrapped key and IV is standard base64.
 *
 * WebCrypto does everything except RSAES-PKCS1-v1_5, which it does not offer; node:crypto does that.
 * CBC has no integrity check: the scheme is upstream's, kept as is so the peers interoperate.
 */
import * as nodeCrypto from "node:crypto";

/** The three opaque strings that cross the relay for one message. */
export interface Envelope {
  ciphertext: string;
  cipherkey: string;
  iv: string;
}

/** How the AES key is wrapped: OAEP by clients, PKCS#1 v1.5 by nodes answering clients. */
export type KeyWrap = "oaep" | "pkcs1v15";

export interface KeyPair {
  /** base64(PEM SPKI): the protocol's public key string. */
  publicKeyB64: string;
  /** WebCrypto RSA-OAEP/SHA-256 private key (the OAEP attempt). */
  privateKey: CryptoKey;
  /** The same private key for node:crypto (the PKCS#1 v1.5 fallback). */
  rsaKey: nodeCrypto.KeyObject;
}

const OAEP = { name: "RSA-OAEP", hash: "SHA-256" } as const;
const AES_KEY_BYTES = 32;
const IV_BYTES = 16;
/** base64 text of a 32-byte key: what upstream wraps. */
const WRAPPED_KEY_TEXT_BYTES = 44;

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder("utf-8", { fatal: true });

export const toB64 = (bytes: ArrayBuffer | Uint8Array): string =>
  Buffer.from(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes)).toString("base64");

/** Strict base64 decode (Buffer silently skips junk, which would hide a corrupted field). */
export function fromB64(text: string): Uint8Array<ArrayBuffer> {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) throw new Error("invalid base64");
  return new Uint8Array(Buffer.from(text, "base64"));
}

export async function generateKeyPair(): Promise<KeyPair> {
  // Extractable once, so the node:crypto twin can be built from the PKCS#8 export.
  const pair = await crypto.subtle.generateKey(
    { ...OAEP, modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]) },
    true,
    ["encrypt", "decrypt"],
  );
  const pkcs8 = Buffer.from(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  return {
    publicKeyB64: await exportPublicKey(pair.publicKey),
    privateKey: pair.privateKey,
    rsaKey: nodeCrypto.createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" }),
  };
}

/** SPKI -> PEM (64-column lines, trailing newline, as Python's cryptography writes it) -> base64. */
export async function exportPublicKey(key: CryptoKey): Promise<string> {
  const lines = toB64(await crypto.subtle.exportKey("spki", key)).match(/.{1,64}/g) ?? [];
  return toB64(utf8.encode(`-----BEGIN PUBLIC KEY-----\n${lines.join("\n")}\n-----END PUBLIC KEY-----\n`));
}

/** base64(PEM) -> DER SPKI; strict like upstream's `base64.b64decode(..., validate=True)`. */
function spkiFromPublicKeyB64(publicKeyB64: string): Uint8Array<ArrayBuffer> {
  const pem = fromUtf8.decode(fromB64(publicKeyB64));
  const match = /^-----BEGIN PUBLIC KEY-----\r?\n([A-Za-z0-9+/=\r\n]+)-----END PUBLIC KEY-----\r?\n?$/.exec(pem);
  if (!match?.[1]) throw new Error("not a PEM public key");
  return fromB64(match[1].replace(/\r?\n/g, ""));
}

interface RecipientKey {
  oaep: CryptoKey;
  pkcs1: nodeCrypto.KeyObject;
}

/** Peers' keys are parsed once per key, not once per message. */
const recipients = new Map<string, Promise<RecipientKey>>();

function recipientKey(publicKeyB64: string): Promise<RecipientKey> {
  let key = recipients.get(publicKeyB64);
  if (!key) {
    if (recipients.size >= 64) recipients.clear();
    key = (async () => {
      const der = spkiFromPublicKeyB64(publicKeyB64);
      const oaep = await crypto.subtle.importKey("spki", der, OAEP, false, ["encrypt"]);
      if ((oaep.algorithm as { modulusLength?: number }).modulusLength !== 2048) throw new Error("not an RSA-2048 key");
      return { oaep, pkcs1: nodeCrypto.createPublicKey({ key: Buffer.from(der), format: "der", type: "spki" }) };
    })();
    recipients.set(publicKeyB64, key);
    key.catch(() => recipients.delete(publicKeyB64));
  }
  return key;
}

export async function sealText(recipientPublicKeyB64: string, plaintext: string, wrap: KeyWrap): Promise<Envelope> {
  const recipient = await recipientKey(recipientPublicKeyB64);
  const rawKey = crypto.getRandomValues(new Uint8Array(AES_KEY_BYTES));
  const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
  const aesKey = await crypto.subtle.importKey("raw", rawKey, "AES-CBC", false, ["encrypt"]);
  const ciphertext = await crypto.subtle.encrypt({ name: "AES-CBC", iv }, aesKey, utf8.encode(plaintext));
  const keyText = utf8.encode(toB64(rawKey));
  const cipherkey =
    wrap === "oaep"
      ? await crypto.subtle.encrypt(OAEP, recipient.oaep, keyText)
      : nodeCrypto.publicEncrypt({ key: recipient.pkcs1, padding: nodeCrypto.constants.RSA_PKCS1_PADDING }, keyText);
  return { ciphertext: toB64(ciphertext), cipherkey: toB64(cipherkey), iv: toB64(iv) };
}

/**
 * RSAES-PKCS1-v1_5 unwrap of the 44-byte key text. Bun's node:crypto refuses PKCS#1 v1.5 private
 * decryption (the Marvin timing attack), so this decrypts raw and checks the padding itself. Only a
 * message of exactly 44 bytes is acceptable, so the layout is fixed (00 02, non-zero padding, 00,
 * message) and is checked at every position without an early exit: no data-dependent scan.
 * A demo receiver also never reports unwrap failures back to the sender.
 */
function unwrapPkcs1v15(rsaKey: nodeCrypto.KeyObject, wrapped: Uint8Array): Uint8Array {
  const em = nodeCrypto.privateDecrypt({ key: rsaKey, padding: nodeCrypto.constants.RSA_NO_PADDING }, wrapped);
  const separator = em.length - WRAPPED_KEY_TEXT_BYTES - 1;
  let bad = em[0]! | (em[1]! ^ 0x02) | em[separator]!;
  for (let i = 2; i < separator; i++) bad |= Number(em[i] === 0);
  if (bad !== 0 || separator < 10) throw new Error("key unwrap failed");
  return em.subarray(separator + 1);
}

async function unwrapKey(keys: KeyPair, cipherkey: string): Promise<Uint8Array<ArrayBuffer>> {
  const wrapped = fromB64(cipherkey);
  let keyText: Uint8Array;
  try {
    keyText = new Uint8Array(await crypto.subtle.decrypt(OAEP, keys.privateKey, wrapped));
  } catch {
    keyText = unwrapPkcs1v15(keys.rsaKey, wrapped);
  }
  const rawKey = fromB64(fromUtf8.decode(keyText));
  if (rawKey.byteLength !== AES_KEY_BYTES) throw new Error("unwrapped key is not AES-256");
  return rawKey;
}

/** Throws on a wrong key, a damaged wrapped key, bad padding or non-UTF-8 plaintext. */
export async function openText(keys: KeyPair, envelope: Envelope): Promise<string> {
  const iv = fromB64(envelope.iv);
  if (iv.byteLength !== IV_BYTES) throw new Error(`IV must be ${IV_BYTES} bytes, got ${iv.byteLength}`);
  const aesKey = await crypto.subtle.importKey("raw", await unwrapKey(keys, envelope.cipherkey), "AES-CBC", false, ["decrypt"]);
  return fromUtf8.decode(await crypto.subtle.decrypt({ name: "AES-CBC", iv }, aesKey, fromB64(envelope.ciphertext)));
}

export const sealJson = (recipientPublicKeyB64: string, value: unknown, wrap: KeyWrap): Promise<Envelope> =>
  sealText(recipientPublicKeyB64, JSON.stringify(value), wrap);

export async function openJson(keys: KeyPair, envelope: Envelope): Promise<unknown> {
  return JSON.parse(await openText(keys, envelope)) as unknown;
}
