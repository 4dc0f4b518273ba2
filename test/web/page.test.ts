/**
 * The chat page as the relay serves it (src/web): embedded, content-hashed, precompressed files
 * with their cache and security headers, content negotiation, the public /relay/status summary,
 * and RELAY_WEB_UI=false giving back the JSON 404. The browser side: test/web/browser.test.ts.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { brotliDecompressSync, gunzipSync } from "node:zlib";
import { loadConfig } from "../../src/config/index.ts";
import { sha256Hex } from "../../src/common/tokens.ts";
import { ASSETS, PAGE, chooseEncoding, webRoutes } from "../../src/web/index.ts";
import { CONTENT_SECURITY_POLICY } from "../../src/web/headers.ts";
import { captureLogger, fakeKey, startTestRelay, type TestRelay } from "../helpers/relay.ts";
import { NODE_CAPS } from "../v1/helpers.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const html = text(PAGE.bodies.identity);

describe("the embedded files", () => {
  test("the page links exactly the hashed assets, and each name is the hash of its bytes", () => {
    const linked = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1]);
    expect(linked.sort()).toEqual(ASSETS.map((a) => a.path).sort());
    for (const a of ASSETS) {
      const hash = createHash("sha256").update(a.bodies.identity).digest("hex").slice(0, 12);
      expect(a.hash).toBe(hash);
      expect(a.path).toMatch(new RegExp(`^/assets/(app|icon)\\.${hash}\\.(js|css|svg)$`));
    }
  });

  test("no inline script, style or event handler in the page (the CSP forbids them anyway)", () => {
    for (const tag of html.match(/<script\b[^>]*>/g) ?? []) expect(tag).toMatch(/\bsrc="\/assets\//);
    expect(html).not.toMatch(/<script\b[^>]*>[^<\s]/);
    expect(html).not.toMatch(/<style\b/i);
    expect(html).not.toMatch(/\sstyle=/i);
    expect(html).not.toMatch(/\son[a-z]+=/i);
    // The text box has no name: even a form submitted without script could not carry it.
    expect(html).toMatch(/<textarea id="prompt"(?![^>]*\bname=)[^>]*>/);
  });

  test("the script has no eval and writes no HTML (Trusted Types would refuse it)", () => {
    const js = text(ASSETS.find((a) => a.path.endsWith(".js"))!.bodies.identity);
    expect(js).not.toMatch(/\beval\(|new Function\(|\.innerHTML\s*=|\.outerHTML\s*=|insertAdjacentHTML|document\.write/);
    expect(CONTENT_SECURITY_POLICY).toContain("require-trusted-types-for 'script'");
  });

  test("precompressed with brotli and gzip, both decompressing to the same bytes; the whole page is far under 100 KB", () => {
    let br = 0;
    let gz = 0;
    for (const f of [PAGE, ...ASSETS]) {
      if (f.bodies.br) expect(Buffer.compare(brotliDecompressSync(f.bodies.br), Buffer.from(f.bodies.identity))).toBe(0);
      if (f.bodies.gzip) expect(Buffer.compare(gunzipSync(f.bodies.gzip), Buffer.from(f.bodies.identity))).toBe(0);
      br += (f.bodies.br ?? f.bodies.identity).byteLength;
      gz += (f.bodies.gzip ?? f.bodies.identity).byteLength;
    }
    expect(PAGE.bodies.br).toBeDefined();
    expect(ASSETS.find((a) => a.path.endsWith(".js"))!.bodies.br).toBeDefined();
    console.log(`chat page, compressed: brotli ${br} B, gzip ${gz} B (page + ${ASSETS.length} assets)`);
    expect(br).toBeLessThan(100 * 1024);
    expect(gz).toBeLessThan(100 * 1024);
  });

  test("content negotiation: brotli, else gzip, q=0 refuses, else the plain bytes", () => {
    expect(chooseEncoding("gzip, deflate, br, zstd", PAGE)).toBe("br");
    expect(chooseEncoding("gzip, deflate", PAGE)).toBe("gzip");
    expect(chooseEncoding("br;q=0, gzip;q=0.5", PAGE)).toBe("gzip");
    expect(chooseEncoding("*", PAGE)).toBe("br");
    expect(chooseEncoding("*;q=0, identity", PAGE)).toBe("identity");
    expect(chooseEncoding("identity", PAGE)).toBe("identity");
    expect(chooseEncoding(null, PAGE)).toBe("identity");
    expect(chooseEncoding("", PAGE)).toBe("identity");
  });
});

describe("served by the relay", () => {
  let relay: TestRelay;
  const logs = captureLogger("info");
  beforeAll(() => {
    relay = startTestRelay({}, { logger: logs.logger });
  });
  afterAll(() => relay.shutdown());

  const get = (path: string, headers: Record<string, string> = {}) => fetch(relay.url + path, { headers, decompress: false } as RequestInit);

  test("GET /: the page, no-cache, with the strict CSP, nosniff and no-referrer", async () => {
    const res = await get("/", { "Accept-Encoding": "identity" });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(res.headers.get("cache-control")).toBe("no-cache");
    const csp = res.headers.get("content-security-policy")!;
    for (const d of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'none'"]) {
      expect(csp).toContain(d);
    }
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval|\*/);
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    expect(res.headers.get("referrer-policy")).toBe("no-referrer");
    expect(res.headers.get("x-frame-options")).toBe("DENY");
    expect(res.headers.get("x-request-id")).toBeTruthy();
    expect(await res.text()).toBe(html);
  });

  test("assets: long-lived immutable cache, their type, the same security headers", async () => {
    for (const a of ASSETS) {
      const res = await get(a.path, { "Accept-Encoding": "identity" });
      expect(res.status).toBe(200);
      expect(res.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
      expect(res.headers.get("content-type")).toBe(a.contentType);
      expect(res.headers.get("x-content-type-options")).toBe("nosniff");
      expect(res.headers.get("referrer-policy")).toBe("no-referrer");
      expect(res.headers.get("content-security-policy")).toBe(CONTENT_SECURITY_POLICY);
      expect(Buffer.compare(Buffer.from(await res.arrayBuffer()), Buffer.from(a.bodies.identity))).toBe(0);
    }
  });

  test("Accept-Encoding picks the precompressed bytes; Vary and per-encoding ETags; If-None-Match gives 304", async () => {
    const br = await get("/", { "Accept-Encoding": "gzip, br" });
    expect(br.headers.get("content-encoding")).toBe("br");
    expect(br.headers.get("vary")).toBe("Accept-Encoding");
    expect(Buffer.compare(brotliDecompressSync(Buffer.from(await br.arrayBuffer())), Buffer.from(PAGE.bodies.identity))).toBe(0);
    const gz = await get("/", { "Accept-Encoding": "gzip" });
    expect(gz.headers.get("content-encoding")).toBe("gzip");
    expect(gunzipSync(Buffer.from(await gz.arrayBuffer())).toString()).toBe(html);
    expect(br.headers.get("etag")).not.toBe(gz.headers.get("etag"));

    const again = await get("/", { "Accept-Encoding": "gzip", "If-None-Match": gz.headers.get("etag")! });
    expect(again.status).toBe(304);
    expect(again.headers.get("content-security-policy")).toBe(CONTENT_SECURITY_POLICY);
    expect(await again.text()).toBe("");
  });

  test("HEAD / answers the head only; POST / is 405; an unknown asset is the JSON 404", async () => {
    const head = await fetch(relay.url + "/", { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe("");
    const post = await fetch(relay.url + "/", { method: "POST", body: "x" });
    expect(post.status).toBe(405);
    const missing = await get("/assets/app.000000000000.js");
    expect(missing.status).toBe(404);
    expect(missing.headers.get("content-type")).toContain("application/json");
  });

  test("page loads are logged by route, never with a query or body", async () => {
    await get("/?q=private-words");
    const line = logs.lines.find((l) => l.msg === "request" && l.route === "/");
    expect(line).toMatchObject({ method: "GET", route: "/", status: 200 });
    expect(logs.raw.join("\n")).not.toContain("private-words");
  });

  test("/relay/status: counts and advertised models only, never a key, fingerprint or id", async () => {
    const empty = (await (await get("/relay/status")).json()) as Record<string, unknown>;
    expect(empty).toEqual({ nodes_online: 0, queue_depth: 0, in_flight: 0, default_model: "qwen3-8b-instruct", models: [] });

    const node = fakeKey("node");
    const other = fakeKey("node");
    for (const [key, caps] of [
      [node, NODE_CAPS],
      [other, { ...NODE_CAPS, supported_model_ids: ["qwen3-8b-instruct", "tiny-model"], active_context_tier: "64k-full", maximum_total_context_tokens: 65536 }],
    ] as const) {
      expect((await relay.post("/api/v1/relay/servers/register", { server_public_key: key, capabilities: caps })).status).toBe(200);
    }
    const client = fakeKey("client");
    expect(
      (
        await relay.post("/api/v1/relay/requests", {
          server_public_key: node, client_public_key: client, chat_history: "Y2lwaGVy", cipherkey: "a2V5", iv: "aXY=", request_id: "status-test-1",
        })
      ).status,
    ).toBe(200);
    await Bun.sleep(1_100); // the summary is cached for a second
    const res = await get("/relay/status");
    expect(res.headers.get("cache-control")).toBe("no-store");
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    const raw = await res.text();
    expect(JSON.parse(raw)).toEqual({
      nodes_online: 2,
      queue_depth: 1,
      in_flight: 0,
      default_model: "qwen3-8b-instruct",
      models: [
        { id: "qwen3-8b-instruct", context_tiers: ["8k-fast", "64k-full"], nodes: 2 },
        { id: "tiny-model", context_tiers: ["64k-full"], nodes: 1 },
      ],
    });
    for (const secret of [node, other, client, sha256Hex(node).slice(0, 12), "status-test-1"]) expect(raw).not.toContain(secret);
  });
});

describe("RELAY_WEB_UI", () => {
  test("is documented by the config and refuses junk", () => {
    expect(loadConfig({}).config.web.enabled).toBe(true);
    expect(loadConfig({ RELAY_WEB_UI: "false" }).config.web.enabled).toBe(false);
    expect(loadConfig({ RELAY_WEB_UI: "maybe" }).problems).toEqual(['RELAY_WEB_UI: expected true or false, got "maybe"']);
    expect(loadConfig({ RELAY_WEB_UI: "off" }).unknown).toEqual([]);
  });

  test("false: / is the relay's JSON 404 again, and so are the assets and /relay/status", async () => {
    const relay = startTestRelay({ RELAY_WEB_UI: "false" });
    try {
      for (const path of Object.values(webRoutes).map((r) => r.path)) {
        const res = await fetch(relay.url + path);
        expect({ path, status: res.status }).toEqual({ path, status: 404 });
        expect(res.headers.get("content-type")).toContain("application/json");
        expect(res.headers.get("content-security-policy")).toBeNull();
      }
      // The API v1 routes the page uses are untouched.
      expect((await fetch(relay.url + "/api/v1/relay/servers/next")).status).toBe(503);
    } finally {
      await relay.shutdown();
    }
  });
});
