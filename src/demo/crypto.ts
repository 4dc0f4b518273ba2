/**
 * token.place-style hybrid encryption, WebCrypto only (crypto.subtle).
 *
 * - Each party owns an RSA-OAEP 2048 / SHA-256 key pair. Public keys travel as base64 of the PEM
 *   ("-----BEGIN PUBLIC KEY-----", SPKI): that string is what the protocol calls
 *   `server_public_key` / `client_public_key`, and the relay compares it byte for byte.
 * - Each message gets a fresh AES-256 key and IV. `cipherkey` = base64(RSA-OAEP(key material)),
 *   `iv` = base64(iv), `chat_history` = base64(AES ciphertext of the UTF-8 plaintext).
 *
 * Symmetric mode: AES-256-CBC with PKCS#7 padding by default, because that is what token.place's
 * encrypt.py and its browser client speak, so this demo's envelopes are byte-compatible with
 * unmodified peers (the whole point of the relay). CBC has no integrity check, so AES-256-GCM is
 * offered too (`mode: "AES-GCM"`): it rejects any tampered byte. No new wire field is needed: the
 * receiver tells the modes apart by IV length (16 bytes = CBC, 12 bytes = GCM).
 *
 * Like encrypt.py, the RSA layer wraps base64(aes key) rather than the raw 32 bytes (a JSEncrypt
 * compatibility quirk); decryption accepts both forms.
 */

export type AesMode = "AES-CBC" | "AES-GCM";

/** The three opaque strings that cross the relay for one message. */
export interface Envelope {
  chat_history: string;
  cipherkey: string;
  iv: string;
}

export interface DemoKeyPair {
  publicKey: CryptoKey;
  privateKey: CryptoKey;
  /** base64(PEM SPKI): the protocol's public key string. */
  publicKeyB64: string;
}

const RSA_PARAMS = { name: "RSA-OAEP", hash: "SHA-256" };
const CBC_IV_BYTES = 16;
const GCM_IV_BYTES = 12;
const AES_KEY_BYTES = 32;

// Buffer is only used for base64; Bun implements it natively and it handles large inputs.
export const toB64 = (bytes: ArrayBuffer | Uint8Array): string =>
  Buffer.from(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes)).toString("base64");

/** Strict base64 decode: Buffer silently skips junk, which would hide a corrupted field. */
export function fromB64(text: string): Uint8Array<ArrayBuffer> {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) throw new Error("invalid base64");
  return new Uint8Array(Buffer.from(text, "base64"));
}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder("utf-8", { fatal: true });

export async function generateKeyPair(): Promise<DemoKeyPair> {
  const pair = await crypto.subtle.generateKey(
    { ...RSA_PARAMS, modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]) },
    true,
    ["encrypt", "decrypt"],
  );
  return { publicKey: pair.publicKey, privateKey: pair.privateKey, publicKeyB64: await exportPublicKey(pair.publicKey) };
}

/** SPKI -> PEM (64-column lines, trailing newline, as Python's cryptography writes it) -> base64. */
export async function exportPublicKey(key: CryptoKey): Promise<string> {
  const der = toB64(await crypto.subtle.exportKey("spki", key));
  const lines = der.match(/.{1,64}/g) ?? [];
  const pem = `-----BEGIN PUBLIC KEY-----\n${lines.join("\n")}\n-----END PUBLIC KEY-----\n`;
  return toB64(utf8.encode(pem));
}

export async function importPublicKey(publicKeyB64: string): Promise<CryptoKey> {
  const pem = fromUtf8.decode(fromB64(publicKeyB64));
  const match = /-----BEGIN PUBLIC KEY-----([\s\S]+?)-----END PUBLIC KEY-----/.exec(pem);
  if (!match?.[1]) throw new Error("not a PEM public key");
  const der = fromB64(match[1].replace(/\s+/g, ""));
  return crypto.subtle.importKey("spki", der, RSA_PARAMS, true, ["encrypt"]);
}

/** Public keys are imported once per peer, not once per message (RSA import is not free). */
const importCache = new Map<string, Promise<CryptoKey>>();
function cachedImport(publicKeyB64: string): Promise<CryptoKey> {
  let key = importCache.get(publicKeyB64);
  if (!key) {
    if (importCache.size > 256) importCache.clear();
    key = importPublicKey(publicKeyB64);
    importCache.set(publicKeyB64, key);
    key.catch(() => importCache.delete(publicKeyB64));
  }
  return key;
}

export async function encryptText(
  recipient: CryptoKey | string,
  plaintext: string,
  mode: AesMode = "AES-CBC",
): Promise<Envelope> {
  const rsaKey = typeof recipient === "string" ? await cachedImport(recipient) : recipient;
  const rawKey = crypto.getRandomValues(new Uint8Array(AES_KEY_BYTES));
  const iv = crypto.getRandomValues(new Uint8Array(mode === "AES-GCM" ? GCM_IV_BYTES : CBC_IV_BYTES));
  const aesKey = await crypto.subtle.importKey("raw", rawKey, mode, false, ["encrypt"]);
  // WebCrypto's AES-CBC applies PKCS#7 padding itself, matching encrypt.py's pkcs7_pad.
  const ciphertext = await crypto.subtle.encrypt({ name: mode, iv }, aesKey, utf8.encode(plaintext));
  const wrapped = await crypto.subtle.encrypt({ name: "RSA-OAEP" }, rsaKey, utf8.encode(toB64(rawKey)));
  return { chat_history: toB64(ciphertext), cipherkey: toB64(wrapped), iv: toB64(iv) };
}

/** Throws on a wrong key, a tampered cipherkey (OAEP check), bad padding, or any GCM tamper. */
export async function decryptText(privateKey: CryptoKey, envelope: Envelope): Promise<string> {
  const iv = fromB64(envelope.iv);
  const mode: AesMode | undefined =
    iv.byteLength === CBC_IV_BYTES ? "AES-CBC" : iv.byteLength === GCM_IV_BYTES ? "AES-GCM" : undefined;
  if (!mode) throw new Error(`unsupported IV length ${iv.byteLength}`);
  const unwrapped: Uint8Array<ArrayBuffer> = new Uint8Array(
    await crypto.subtle.decrypt({ name: "RSA-OAEP" }, privateKey, fromB64(envelope.cipherkey)),
  );
  const rawKey = unwrapped.byteLength === AES_KEY_BYTES ? unwrapped : fromB64(fromUtf8.decode(unwrapped));
  if (rawKey.byteLength !== AES_KEY_BYTES) throw new Error("unwrapped key is not AES-256");
  const aesKey = await crypto.subtle.importKey("raw", rawKey, mode, false, ["decrypt"]);
  const plain = await crypto.subtle.decrypt({ name: mode, iv }, aesKey, fromB64(envelope.chat_history));
  return fromUtf8.decode(plain);
}

export const encryptJson = (recipient: CryptoKey | string, value: unknown, mode?: AesMode): Promise<Envelope> =>
  encryptText(recipient, JSON.stringify(value), mode);

export async function decryptJson<T = unknown>(privateKey: CryptoKey, envelope: Envelope): Promise<T> {
  return JSON.parse(await decryptText(privateKey, envelope)) as T;
}

/** A chat history as token.place keeps it: OpenAI-style role/content messages. */
export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}
