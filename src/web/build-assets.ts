/**
 * BUILD TIME ONLY: a Bun macro (imported `with { type: "macro" }` by ./assets.ts). It runs while
 * `bun build --compile` bundles the relay (and when the source is run or tested), and its return
 * value is inlined into the bundle as a literal, so the compiled binary carries the whole page and
 * never reads a file at run time (the distroless image has a read-only root).
 *
 * It bundles the browser code (src/web/client/main.ts, with its one library) and the stylesheet
 * with Bun's bundler (minified), names every asset by its content (`app.<sha256/12>.js`), puts the
 * names into the HTML, and precompresses each file with brotli (quality 11) and gzip (level 9).
 * Bytes travel as base64 because a macro may only return JSON-like values.
 *
 * `Bun.build` cannot be called from inside a macro while the bundler waits for it (it would
 * deadlock), so the bundler runs as a child process: the same Bun that runs this macro.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";

export interface BuiltBody {
  /** base64 of the bytes. */
  identity: string;
  gzip?: string;
  br?: string;
}

export interface BuiltFile {
  /** URL path: "/" for the page, "/assets/<name>.<hash>.<ext>" for the rest. */
  path: string;
  contentType: string;
  /** Content hash (hex, 12 digits): the ETag and, for assets, part of the name. */
  hash: string;
  bodies: BuiltBody;
  /** Bytes of each encoding, for the size report and the tests. */
  sizes: { identity: number; gzip?: number; br?: number };
}

export interface BuiltSite {
  page: BuiltFile;
  assets: BuiltFile[];
}

const DIR = import.meta.dir;
const HASH_CHARS = 12;

function bunBuild(entry: string, extra: string[] = []): string {
  const r = Bun.spawnSync([process.execPath, "build", entry, "--minify", "--sourcemap=none", ...extra], {
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, NO_COLOR: "1" },
  });
  if (r.exitCode !== 0) throw new Error(`web assets: bun build ${entry} failed:\n${r.stderr.toString()}`);
  return r.stdout.toString();
}

const hashOf = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex").slice(0, HASH_CHARS);
const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64");

function file(path: string, contentType: string, bytes: Uint8Array, hash: string): BuiltFile {
  const gz = gzipSync(bytes, { level: 9 });
  const br = brotliCompressSync(bytes, {
    params: { [constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_SIZE_HINT]: bytes.byteLength },
  });
  const out: BuiltFile = { path, contentType, hash, bodies: { identity: b64(bytes) }, sizes: { identity: bytes.byteLength } };
  // An encoding that does not save bytes is not offered (tiny files).
  if (gz.byteLength < bytes.byteLength) {
    out.bodies.gzip = b64(gz);
    out.sizes.gzip = gz.byteLength;
  }
  if (br.byteLength < bytes.byteLength) {
    out.bodies.br = b64(br);
    out.sizes.br = br.byteLength;
  }
  return out;
}

function asset(stem: string, ext: string, contentType: string, text: string): BuiltFile {
  const bytes = new TextEncoder().encode(text);
  const hash = hashOf(bytes);
  return file(`/assets/${stem}.${hash}.${ext}`, contentType, bytes, hash);
}

export function buildWebAssets(): BuiltSite {
  const js = asset("app", "js", "text/javascript; charset=utf-8", bunBuild(join(DIR, "client/main.ts"), ["--target=browser", "--format=esm"]));
  const css = asset("app", "css", "text/css; charset=utf-8", bunBuild(join(DIR, "page/style.css")));
  const icon = asset("icon", "svg", "image/svg+xml", readFileSync(join(DIR, "page/icon.svg"), "utf8").trim());
  const names: Record<string, string> = { "app.js": js.path, "app.css": css.path, "icon.svg": icon.path };
  const template = readFileSync(join(DIR, "page/index.html"), "utf8");
  const html = template
    .replace(/\{\{(app\.js|app\.css|icon\.svg)\}\}/g, (_, name: string) => names[name]!)
    // Indentation is for people reading the template; the page ships without it.
    .replace(/\n\s+/g, "\n");
  if (/\{\{|\}\}/.test(html)) throw new Error("web assets: index.html has an unknown {{placeholder}}");
  const bytes = new TextEncoder().encode(html);
  return { page: file("/", "text/html; charset=utf-8", bytes, hashOf(bytes)), assets: [js, css, icon] };
}
