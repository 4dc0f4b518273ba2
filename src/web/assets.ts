/**
 * The chat page's files, embedded: `buildWebAssets()` is a macro, so `bun build --compile` runs it
 * once and inlines its result here (see ./build-assets.ts). Nothing is read from disk at run time.
 */
import { buildWebAssets } from "./build-assets.ts" with { type: "macro" };

export type Encoding = "br" | "gzip" | "identity";

export interface WebFile {
  path: string;
  contentType: string;
  hash: string;
  /** The bytes per content coding; identity is always there. */
  bodies: Partial<Record<Encoding, Uint8Array>> & { identity: Uint8Array };
}

const BUILT = buildWebAssets();

function decode(f: typeof BUILT.page): WebFile {
  const bytes = (s: string) => new Uint8Array(Buffer.from(s, "base64"));
  const bodies: WebFile["bodies"] = { identity: bytes(f.bodies.identity) };
  if (f.bodies.gzip) bodies.gzip = bytes(f.bodies.gzip);
  if (f.bodies.br) bodies.br = bytes(f.bodies.br);
  return { path: f.path, contentType: f.contentType, hash: f.hash, bodies };
}

export const PAGE: WebFile = decode(BUILT.page);
export const ASSETS: readonly WebFile[] = BUILT.assets.map(decode);
