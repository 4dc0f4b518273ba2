import { connect, type TcpNetConnectOpts } from "node:net";

/**
 * A minimal HTTP/1.1 client over a raw TCP socket, for the hostile-client fuzz: it writes exactly
 * the bytes it is given (malformed heads, lying Content-Length, bare LFs, odd methods, chunked
 * bodies, several requests at once) and binds a chosen loopback source address, so one test can be
 * many clients (the relay's per-address quotas and hold caps see 127.0.0.x as distinct clients).
 */

export interface RawResponse {
  status: number;
  /** Lower-cased field names; repeated fields joined with ", ". */
  headers: Record<string, string>;
  body: Uint8Array;
  /** The response's body ended by the server closing (no length and not chunked). */
  bodyToClose: boolean;
}

export type RawOutcome =
  /** Every expected response arrived, complete. */
  | { kind: "responses"; responses: RawResponse[]; ms: number }
  /** The server closed the connection before (all) responses arrived: `responses` are the complete ones. */
  | { kind: "closed"; responses: RawResponse[]; partial: string; ms: number }
  /** Nothing (complete) within the timeout: a hang. */
  | { kind: "timeout"; responses: RawResponse[]; partial: string; ms: number }
  /** The connection failed (refused, reset before anything arrived). */
  | { kind: "error"; error: string; responses: RawResponse[]; ms: number };

export interface RawRequestOptions {
  port: number;
  host?: string;
  /** Source address (any 127.0.0.0/8 address on Linux loopback). */
  localAddress?: string;
  /** What to write, in order; a number is a pause in ms between writes (trickles, slow heads). */
  parts: (string | Uint8Array | number)[];
  /** Responses to wait for (pipelining: several); HEAD responses have no body. */
  expect?: { head?: boolean }[];
  /** Half-close our side after writing (a client that sends and then shuts its write side). */
  endAfterWrite?: boolean;
  /** Stop writing once the server has answered anything (it refused the request before its body). */
  stopOnAnswer?: boolean;
  timeoutMs: number;
}

const CRLFCRLF = Buffer.from("\r\n\r\n");

/** Sends raw bytes and reads back the expected number of responses (or a close or a timeout). */
export function rawRequest(opts: RawRequestOptions): Promise<RawOutcome> {
  const started = performance.now();
  const expect = opts.expect ?? [{}];
  return new Promise((resolve) => {
    let buf: Buffer = Buffer.alloc(0);
    const responses: RawResponse[] = [];
    let done = false;
    const connectOpts: TcpNetConnectOpts = { port: opts.port, host: opts.host ?? "127.0.0.1", localAddress: opts.localAddress };
    const sock = connect(connectOpts);
    const finish = (o: RawOutcome) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(o);
    };
    const ms = () => performance.now() - started;
    const timer = setTimeout(() => finish({ kind: "timeout", responses, partial: preview(buf), ms: ms() }), opts.timeoutMs);
    const parse = (closed: boolean) => {
      while (responses.length < expect.length) {
        const r = parseOne(buf, expect[responses.length]!.head === true, closed);
        if (!r) break;
        responses.push(r.response);
        buf = buf.subarray(r.consumed);
        // 1xx interim answers (100 Continue) are not the response.
        if (r.response.status >= 100 && r.response.status < 200 && r.response.status !== 101) responses.pop();
      }
      if (responses.length >= expect.length) finish({ kind: "responses", responses, ms: ms() });
      else if (closed) finish({ kind: "closed", responses, partial: preview(buf), ms: ms() });
    };
    sock.on("data", (d: Buffer) => {
      buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
      parse(false);
    });
    sock.on("close", () => parse(true));
    sock.on("error", (e: Error) => {
      if (responses.length === 0 && buf.length === 0) finish({ kind: "error", error: String(e), responses, ms: ms() });
      else parse(true);
    });
    sock.once("connect", async () => {
      for (const p of coalesce(opts.parts)) {
        if (done || (opts.stopOnAnswer && (buf.length > 0 || responses.length > 0))) return;
        if (typeof p === "number") await Bun.sleep(p);
        else if (!sock.destroyed) sock.write(p);
      }
      if (opts.endAfterWrite && !sock.destroyed) sock.end();
    });
  });
}

/**
 * Adjacent byte parts become one write: the kernel takes them at once, so a server that answers and
 * closes before reading everything does not turn our next write into EPIPE (and lose its answer).
 */
function coalesce(parts: (string | Uint8Array | number)[]): (Buffer | number)[] {
  const out: (Buffer | number)[] = [];
  let pending: Buffer[] = [];
  const flush = () => {
    if (pending.length > 0) out.push(Buffer.concat(pending));
    pending = [];
  };
  for (const p of parts) {
    if (typeof p === "number") {
      flush();
      out.push(p);
    } else pending.push(typeof p === "string" ? Buffer.from(p) : Buffer.from(p.buffer, p.byteOffset, p.byteLength));
  }
  flush();
  return out;
}

const preview = (b: Buffer) => b.subarray(0, 300).toString("latin1");

/** One response at the start of `buf`, or undefined while incomplete. */
function parseOne(buf: Buffer, head: boolean, closed: boolean): { response: RawResponse; consumed: number } | undefined {
  const end = buf.indexOf(CRLFCRLF);
  if (end < 0) return undefined;
  const lines = buf.subarray(0, end).toString("latin1").split("\r\n");
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0]!)?.[1] ?? NaN);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const i = line.indexOf(":");
    if (i <= 0) continue;
    const name = line.slice(0, i).trim().toLowerCase();
    const value = line.slice(i + 1).trim();
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  const start = end + 4;
  const noBody = head || status === 204 || status === 304 || (status >= 100 && status < 200);
  if (noBody) return { response: { status, headers, body: new Uint8Array(0), bodyToClose: false }, consumed: start };
  if (/\bchunked\b/i.test(headers["transfer-encoding"] ?? "")) {
    const parts: Buffer[] = [];
    let at = start;
    for (;;) {
      const nl = buf.indexOf("\r\n", at);
      if (nl < 0) return undefined;
      const size = parseInt(buf.subarray(at, nl).toString("latin1").split(";")[0]!, 16);
      if (!Number.isFinite(size)) return undefined;
      if (size === 0) {
        // Trailers (none expected) end with an empty line.
        const trailerEnd = buf.indexOf("\r\n", nl + 2);
        if (trailerEnd < 0) return undefined;
        return { response: { status, headers, body: new Uint8Array(Buffer.concat(parts)), bodyToClose: false }, consumed: trailerEnd + 2 };
      }
      if (buf.length < nl + 2 + size + 2) return undefined;
      parts.push(buf.subarray(nl + 2, nl + 2 + size));
      at = nl + 2 + size + 2;
    }
  }
  if (headers["content-length"] !== undefined) {
    const length = Number(headers["content-length"]);
    if (buf.length - start < length) return undefined;
    return { response: { status, headers, body: new Uint8Array(buf.subarray(start, start + length)), bodyToClose: false }, consumed: start + length };
  }
  if (!closed) return undefined;
  return { response: { status, headers, body: new Uint8Array(buf.subarray(start)), bodyToClose: true }, consumed: buf.length };
}

/** A request head (request line and fields) as raw text; `fields` in order, duplicates allowed. */
export function head(method: string, target: string, fields: [string, string][], version = "HTTP/1.1"): string {
  return `${method} ${target} ${version}\r\n${fields.map(([k, v]) => `${k}: ${v}\r\n`).join("")}\r\n`;
}
