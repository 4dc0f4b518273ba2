/**
 * The browser chat page: `GET /` serves a page that talks to compute nodes through the
 * API v1 relay routes, encrypting and decrypting in the browser, so the relay only ever forwards
 * ciphertext. Its files are built and embedded at build time (./assets.ts); `/relay/status` gives
 * the page public counts and models. Turned off by RELAY_WEB_UI=false (then `/` is the JSON 404).
 */
import type { Handler } from "../http/router.ts";
import { mount, type Mount, type RouteSpec } from "../http/routes.ts";
import type { V1Store } from "../v1/store.ts";
import { ASSETS, PAGE, type Encoding, type WebFile } from "./assets.ts";
import { ASSET_CACHE, PAGE_CACHE, SECURITY_HEADERS } from "./headers.ts";
import { cachedPublicStatus } from "./status.ts";

export const STATUS_PATH = "/relay/status";

/** Route names of the assets: `asset:<path>` (the paths carry their content hash). */
const assetRouteName = (f: WebFile) => `asset:${f.path}`;

/**
 * The page, its hashed assets and the public status summary. Page and asset loads are logged at
 * info like any request; /relay/status, which every open tab polls every few seconds, at debug.
 */
export const webRoutes: Readonly<Record<string, RouteSpec>> = {
  page: { method: "GET", path: "/" },
  status: { method: "GET", path: STATUS_PATH, quiet: true },
  ...Object.fromEntries(ASSETS.map((f) => [assetRouteName(f), { method: "GET", path: f.path } satisfies RouteSpec])),
};

/**
 * The content coding to send: brotli, else gzip, when the client accepts it (RFC 9110 §12.5.3,
 * `q=0` refuses) and the file has it; otherwise the plain bytes.
 */
export function chooseEncoding(acceptEncoding: string | null, file: WebFile): Encoding {
  if (!acceptEncoding) return "identity";
  const accepted = new Map<string, number>();
  for (const part of acceptEncoding.toLowerCase().split(",")) {
    const [name, ...params] = part.trim().split(";");
    if (!name) continue;
    const q = params.map((p) => /^\s*q\s*=\s*([0-9.]+)\s*$/.exec(p)?.[1]).find((v) => v !== undefined);
    accepted.set(name.trim(), q === undefined ? 1 : Number(q));
  }
  const ok = (name: string) => (accepted.get(name) ?? (accepted.has("*") ? accepted.get("*")! : 0)) > 0;
  if (file.bodies.br && ok("br")) return "br";
  if (file.bodies.gzip && ok("gzip")) return "gzip";
  return "identity";
}

const etagOf = (file: WebFile, encoding: Encoding) => `"${file.hash}${encoding === "identity" ? "" : `-${encoding}`}"`;

function notModified(ifNoneMatch: string | null, etag: string): boolean {
  if (!ifNoneMatch) return false;
  return ifNoneMatch.split(",").some((t) => {
    const tag = t.trim().replace(/^W\//, "");
    return tag === "*" || tag === etag;
  });
}

/** Serves one embedded file, precompressed when the client takes it, with the page's security headers. */
export function serveFile(file: WebFile, cacheControl: string): Handler {
  return (req) => {
    const encoding = chooseEncoding(req.headers.get("accept-encoding"), file);
    const etag = etagOf(file, encoding);
    const headers: Record<string, string> = {
      ...SECURITY_HEADERS,
      "Content-Type": file.contentType,
      "Cache-Control": cacheControl,
      ETag: etag,
      Vary: "Accept-Encoding",
    };
    if (encoding !== "identity") headers["Content-Encoding"] = encoding;
    if (notModified(req.headers.get("if-none-match"), etag)) return new Response(null, { status: 304, headers });
    return new Response(file.bodies[encoding]!, { status: 200, headers });
  };
}

export interface WebDeps {
  v1Store: V1Store;
}

export function createWebMount(deps: WebDeps): Mount {
  const status = cachedPublicStatus(deps.v1Store);
  const handlers: Record<string, Handler> = {
    page: serveFile(PAGE, PAGE_CACHE),
    status: async () =>
      new Response(JSON.stringify(await status()), {
        headers: { ...SECURITY_HEADERS, "Content-Type": "application/json", "Cache-Control": "no-store" },
      }),
  };
  for (const f of ASSETS) handlers[assetRouteName(f)] = serveFile(f, ASSET_CACHE);
  return mount(webRoutes, handlers);
}

export { ASSETS, PAGE };
