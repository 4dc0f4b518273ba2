/**
 * The hybrid scheme of token.place API v1 relay payloads (relay spec §9), in the browser: what
 * upstream's `encrypt.py` does, so the unmodified `server.py` opens what this page seals and this
 * page opens what it answers.
 *
 * - Key pair: RSA-2048, made in the page (WebCrypto) for the page's lifetime. The public key
 *   travels as base64 of its PEM SPKI text (64-column lines, trailing newline, as Python writes it).
 * - Each message: a fresh AES-256 key and 16-byte IV, AES-256-CBC with PKCS#7 padding; the RSA
 *   layer wraps the base64 TEXT of the AES key (44 bytes), as upstream does.
 * - Page -> node: RSA-OAEP with SHA-256 (MGF1-SHA-256), like client.py.
 * - Node -> page: the real node wraps with RSAES-PKCS1-v1_5. A receiver tries OAEP, then v1.5.
 *
 * WebCrypto has no RSAES-PKCS1-v1_5, so that one step uses `micro-rsa-dsa-dh` (pinned 0.2.3,
 * MIT, by Paul Miller, the author of the audited noble libraries; actively maintained). Why it:
 * it is small and tree-shakes to about 1.6 KB gzipped for this one primitive (bundled the same
 * way, node-forge is ~79 KB gzipped and jsencrypt ~18 KB, each bringing its own RSA, key
 * generation and ASN.1 that the page would not use), it works on plain bigints so it takes
 * WebCrypto's own key as JWK, it has no dependency but the audited @noble/hashes, and it
 * implements RFC 8017 §7.2.2 directly. Caveats, accepted here: its bigint arithmetic is not
 * constant time, and PKCS#1 v1.5 decryption is a padding oracle if failures are observable. This
 * page sends nothing that depends on whether an unwrap failed (it only tells the person in front
 * of it), and it only unwraps the one answer to each request it made, so a hostile relay would get
 * at most one guess per message the person sends: far from the many thousands such an attack
 * needs. Everything else (key generation, OAEP, AES, randomness) is WebCrypto.
 *
 * CBC has no integrity check: the scheme is upstream's, kept so the peers interoperate; the answer
 * is still bound to this request by the id and key inside the ciphertext (isResponsePlaintext in
 * src/demo/protocol.ts, which ./main.ts checks).
 */
import { PKCS1_KEM } from "micro-rsa-dsa-dh/rsa.js";

export interface Envelope {
  ciphertext: string;
  cipherkey: string;
  iv: string;
}

export interface ClientKeys {
  /** base64(PEM SPKI): the protocol's `client_public_key`. */
  publicKeyB64: string;
  /** For the OAEP attempt. */
  oaepKey: CryptoKey;
  /** The same private key as numbers, for the PKCS#1 v1.5 unwrap. */
  rsa: { n: bigint; d: bigint };
}

const OAEP = { name: "RSA-OAEP", hash: "SHA-256" } as const;
const AES_KEY_BYTES = 32;
const IV_BYTES = 16;
/** base64 text of a 32-byte key: what both peers wrap. */
const KEY_TEXT_BYTES = 44;

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder("utf-8", { fatal: true });

export function toB64(bytes: ArrayBuffer | Uint8Array): string {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let bin = "";
  for (let i = 0; i < u8.length; i += 0x8000) bin += String.fromCharCode(...u8.subarray(i, i + 0x8000));
  return btoa(bin);
}

/** Strict standard base64 (what the peers send); anything else is refused, not skipped. */
export function fromB64(text: string): Uint8Array<ArrayBuffer> {
  if (text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) throw new Error("invalid base64");
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function b64urlToBigint(s: string): bigint {
  const b64 = s.replace(/-/g, "+").replace(/_/g, "/");
  const bytes = fromB64(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  let hex = "";
  for (const b of bytes) hex += b.toString(16).padStart(2, "0");
  return BigInt(`0x${hex || "0"}`);
}

export async function createClientKeys(): Promise<ClientKeys> {
  // Extractable so the PKCS#1 v1.5 step can read the private exponent; it never leaves the page.
  const pair = await crypto.subtle.generateKey({ ...OAEP, modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]) }, true, ["encrypt", "decrypt"]);
  const jwk = await crypto.subtle.exportKey("jwk", pair.privateKey);
  if (!jwk.n || !jwk.d) throw new Error("the browser did not export the RSA key");
  const lines = toB64(await crypto.subtle.exportKey("spki", pair.publicKey)).match(/.{1,64}/g) ?? [];
  const pem = `-----BEGIN PUBLIC KEY-----\n${lines.join("\n")}\n-----END PUBLIC KEY-----\n`;
  return { publicKeyB64: toB64(utf8.encode(pem)), oaepKey: pair.privateKey, rsa: { n: b64urlToBigint(jwk.n), d: b64urlToBigint(jwk.d) } };
}

/** base64(PEM) -> DER SPKI, strictly (the node's key as servers/next hands it over). */
function spkiOf(publicKeyB64: string): Uint8Array<ArrayBuffer> {
  const pem = fromUtf8.decode(fromB64(publicKeyB64));
  const m = /^-----BEGIN PUBLIC KEY-----\r?\n([A-Za-z0-9+/=\r\n]+)-----END PUBLIC KEY-----\r?\n?$/.exec(pem);
  if (!m?.[1]) throw new Error("not a PEM public key");
  return fromB64(m[1].replace(/\r?\n/g, ""));
}

/** Seals `plaintext` for the node's key: AES-256-CBC, the key text wrapped with RSA-OAEP/SHA-256. */
export async function sealForNode(nodePublicKeyB64: string, plaintext: string): Promise<Envelope> {
  const nodeKey = await crypto.subtle.importKey("spki", spkiOf(nodePublicKeyB64), OAEP, false, ["encrypt"]);
  if ((nodeKey.algorithm as { modulusLength?: number }).modulusLength !== 2048) throw new Error("the node's key is not RSA-2048");
  const rawKey = crypto.getRandomValues(new Uint8Array(AES_KEY_BYTES));
  const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
  const aesKey = await crypto.subtle.importKey("raw", rawKey, "AES-CBC", false, ["encrypt"]);
  const ciphertext = await crypto.subtle.encrypt({ name: "AES-CBC", iv }, aesKey, utf8.encode(plaintext));
  const cipherkey = await crypto.subtle.encrypt(OAEP, nodeKey, utf8.encode(toB64(rawKey)));
  return { ciphertext: toB64(ciphertext), cipherkey: toB64(cipherkey), iv: toB64(iv) };
}

async function unwrapKey(keys: ClientKeys, cipherkey: string): Promise<Uint8Array<ArrayBuffer>> {
  const wrapped = fromB64(cipherkey);
  let keyText: Uint8Array;
  try {
    keyText = new Uint8Array(await crypto.subtle.decrypt(OAEP, keys.oaepKey, wrapped));
  } catch {
    keyText = PKCS1_KEM.decrypt(keys.rsa, wrapped);
  }
  if (keyText.byteLength !== KEY_TEXT_BYTES) throw new Error("the wrapped key has the wrong length");
  const rawKey = fromB64(fromUtf8.decode(keyText));
  if (rawKey.byteLength !== AES_KEY_BYTES) throw new Error("the unwrapped key is not AES-256");
  return rawKey;
}

/** Opens an envelope sealed for this page's key; throws on any damage (wrong key, padding, UTF-8). */
export async function openFromNode(keys: ClientKeys, envelope: Envelope): Promise<string> {
  const iv = fromB64(envelope.iv);
  if (iv.byteLength !== IV_BYTES) throw new Error("the IV is not 16 bytes");
  const aesKey = await crypto.subtle.importKey("raw", await unwrapKey(keys, envelope.cipherkey), "AES-CBC", false, ["decrypt"]);
  return fromUtf8.decode(await crypto.subtle.decrypt({ name: "AES-CBC", iv }, aesKey, fromB64(envelope.ciphertext)));
}

/** Unguessable ids and proofs (spec §3.4): 128 random bits as hex. */
export function randomHex(bytes = 16): string {
  return [...crypto.getRandomValues(new Uint8Array(bytes))].map((b) => b.toString(16).padStart(2, "0")).join("");
}
