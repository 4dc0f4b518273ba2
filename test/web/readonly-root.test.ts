/**
 * The chat page is inside the compiled binary: the x64 binary, alone on a read-only root with no
 * /tmp (the distroless image's conditions, see test/container/sandbox.ts), serves `/` and every
 * asset the page links, precompressed, with their headers. Nothing is read from a file at run time.
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { brotliDecompressSync } from "node:zlib";
import { X64, binaryProblem, cleanupAfterAll, gate, gatedTest, Spawned } from "../container/harness.ts";
import { lddLibraries, sandboxCommand, sandboxProblems, stageBinary } from "../container/sandbox.ts";

const g = gate("chat page from the binary on a read-only root (bubblewrap)", [binaryProblem(X64), ...(binaryProblem(X64) ? [] : sandboxProblems())]);

cleanupAfterAll();

describe("the compiled binary on a read-only root", () => {
  let staged: { path: string; remove: () => void } | undefined;
  let relay: Spawned | undefined;
  let origin = "";

  beforeAll(async () => {
    if (!g.ok) return;
    staged = stageBinary(X64);
    relay = new Spawned(sandboxCommand({ binary: staged.path, libs: lddLibraries(X64), env: { RELAY_PORT: "0", TOKENPLACE_RELAY_ONLY: "true" } }));
    origin = `http://127.0.0.1:${await relay.waitListening(30_000)}`;
  });
  afterAll(async () => {
    await relay?.stop();
    staged?.remove();
  });

  gatedTest(g, "serves the page and every asset it links, brotli-compressed, with the page's headers", async () => {
    const page = await fetch(`${origin}/`, { headers: { "Accept-Encoding": "br" }, decompress: false } as RequestInit);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-encoding")).toBe("br");
    expect(page.headers.get("content-security-policy")).toContain("default-src 'none'");
    const html = brotliDecompressSync(Buffer.from(await page.arrayBuffer())).toString();
    const linked = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1]!);
    expect(linked.length).toBe(3);
    for (const path of linked) {
      const res = await fetch(origin + path);
      expect({ path, status: res.status }).toEqual({ path, status: 200 });
      expect(res.headers.get("cache-control")).toContain("immutable");
      expect((await res.arrayBuffer()).byteLength).toBeGreaterThan(100);
    }
    const status = await fetch(`${origin}/relay/status`);
    expect(((await status.json()) as { nodes_online: number }).nodes_online).toBe(0);
    expect(relay!.stderr).not.toMatch(/EROFS|EACCES|ENOENT|error/i);
  }, 60_000);
});
