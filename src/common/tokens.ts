export const SERVER_TOKEN_HEADER = "X-Relay-Server-Token";

/**
 * Constant-time check of a presented token against every configured one. Both sides are hashed
 * first so lengths never leak through timingSafeEqual, and all tokens are compared every time
 * (no early exit that would reveal which rotation slot matched).
 */
export function createTokenCheck(tokens: readonly string[]): (presented: string | null) => boolean {
  if (tokens.length === 0) return () => true;
  const digests = tokens.map(sha256);
  return (presented) => {
    const candidate = sha256(presented ?? "");
    let ok = false;
    // Bun's timingSafeEqual on the global crypto is node:crypto's, without evaluating node:crypto
    // at start (RSS: docs/demo-and-bench.md, "Where the relay's memory goes").
    for (const d of digests) ok = crypto.timingSafeEqual(d, candidate) || ok;
    return ok && presented !== null;
  };
}

/**
 * SHA-256 of a string's UTF-8 bytes. Bun's one-shot hasher: the same digest as node:crypto's
 * createHash, about four times cheaper per call, and several run on every node request.
 */
const sha256 = (s: string): Uint8Array => Bun.CryptoHasher.hash("sha256", s);

/** Lowercase hex SHA-256 of a secret's UTF-8 bytes: the only form in which credentials are kept. */
export const sha256Hex = (secret: string): string => Bun.CryptoHasher.hash("sha256", secret, "hex");

/** A per-registration control credential: 32 random bytes, URL-safe base64 without padding (43 chars). */
export const newCredential = () => Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url");
