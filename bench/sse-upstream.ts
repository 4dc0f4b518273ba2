/**
 * The streaming upstream for `npm run bench` (sections "proxy" and "memory"): a stand-in for the
 * GPU box answering `GET <any prefix>/sse?n=N&gap=MS` with N Server-Sent Events at a steady rate,
 * one every MS milliseconds, the first at once. Each event carries its send time (wall-clock ms with
 * sub-ms precision, comparable across processes on one machine) so a client can subtract it from
 * the arrival time, and a token-sized text like a model's. Events are scheduled against the
 * stream's start, not the previous event, so a late tick does not slow the rate down.
 *
 * `GET /__stats` answers the number of streams open right now. Prints `{"msg":"listening","port":N}`.
 */
export {};

const now = () => performance.timeOrigin + performance.now();
const enc = new TextEncoder();
const TOKEN_TEXT = "lorem ipsum dolor sit amet consectetur";
let open = 0;

function stream(n: number, gapMs: number, signal: AbortSignal): ReadableStream {
  return new ReadableStream({
    type: "direct",
    async pull(c) {
      open++;
      try {
        const start = performance.now();
        for (let i = 0; i < n && !signal.aborted; i++) {
          const wait = start + i * gapMs - performance.now();
          if (wait > 0) await Bun.sleep(wait);
          if (signal.aborted) break;
          c.write(enc.encode(`data: ${JSON.stringify({ i, sentAt: now(), token: TOKEN_TEXT })}\n\n`));
          await c.flush();
        }
      } catch {
        // the client went away mid-write
      } finally {
        open--;
      }
      c.close();
    },
  });
}

const server = Bun.serve({
  hostname: "127.0.0.1",
  port: Number(process.env.SSE_PORT ?? "0"),
  idleTimeout: 0,
  development: false,
  fetch(req, srv) {
    const url = new URL(req.url);
    if (url.pathname === "/__stats") return Response.json({ open });
    if (!url.pathname.endsWith("/sse")) return Response.json({ status: "ok" });
    srv.timeout(req, 0);
    const n = Number(url.searchParams.get("n") ?? "10");
    const gap = Number(url.searchParams.get("gap") ?? "100");
    return new Response(stream(n, gap, req.signal), { headers: { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" } });
  },
});

console.log(JSON.stringify({ msg: "listening", port: server.port }));
const shutdown = () => void server.stop(true).finally(() => process.exit(0));
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
