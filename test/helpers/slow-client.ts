// A slow HTTP client for delivery tests (src/http/delivery.ts): real sockets, a tiny receive buffer.

/**
 * A client with a 4 KiB receive buffer (so the relay's writes really wait for it), in Python because
 * neither fetch nor Bun's sockets can set SO_RCVBUF: it sends one POST, reads at most `stopAfter`
 * bytes at `rate` bytes/s, and prints what it read as JSON.
 */
const SLOW_CLIENT = `
import json, socket, sys, time
port, path, body, rate, stop_after = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3].encode(), int(sys.argv[4]), int(sys.argv[5])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096); s.connect(("127.0.0.1", port))
s.sendall(b"POST " + path + b" HTTP/1.1\\r\\nHost: t\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
data = b""; t0 = time.time()
while len(data) < stop_after:
    d = s.recv(16384)
    if not d: break
    data += d
    if data.endswith(b"\\r\\n0\\r\\n\\r\\n"): break
    time.sleep(max(0.0, len(data) / rate - (time.time() - t0)))
s.close()
head, _, rest = data.partition(b"\\r\\n\\r\\n")
complete = rest.endswith(b"\\r\\n0\\r\\n\\r\\n")
text = b""
if complete:
    while rest:
        size, _, rest = rest.partition(b"\\r\\n"); n = int(size, 16)
        if n == 0: break
        text += rest[:n]; rest = rest[n + 2:]
print(json.dumps({"status": head.split(b" ")[1].decode() if head else "", "read": len(data), "complete": complete, "body": json.loads(text) if complete else None}))
`;

export const python = Bun.which("python3");
if (!python) {
  if (process.env.CI === "true") throw new Error("python3 is required for the slow-reader delivery tests");
  console.warn("SKIP slow-reader delivery tests: python3 is not installed");
}

/** POSTs `body` to `path` as that client; resolves with what it read. */
export async function slowClient(relay: { port: number }, path: string, body: unknown, rate: number, stopAfter: number) {
  const proc = Bun.spawn([python!, "-c", SLOW_CLIENT, String(relay.port), path, JSON.stringify(body), String(rate), String(stopAfter)], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`slow client failed: ${err}`);
  return JSON.parse(out) as { status: string; read: number; complete: boolean; body: Record<string, unknown> | null };
}

