import { connect, type Socket } from "node:net";

export interface RawReply {
  status: number;
  head: string;
  headers: Record<string, string>;
  body: string;
}

export interface RawConn {
  /** Writes bytes as given (a request head, part of a body, ...). */
  send(data: string | Uint8Array): void;
  /** The first complete response (by Content-Length), or what arrived before the server closed. */
  reply(timeoutMs?: number): Promise<RawReply>;
  /** Resolves when the server (or we) closed the connection. */
  readonly closed: Promise<void>;
  isClosed(): boolean;
  destroy(): void;
}

/**
 * A TCP connection to the relay driven byte by byte: what a hostile client does (a head and part of
 * a body, then nothing) cannot be expressed with fetch.
 */
export function openRaw(port: number, host = "127.0.0.1", localAddress?: string): Promise<RawConn> {
  return new Promise((resolve, reject) => {
    // localAddress (e.g. 127.0.0.77): another client address on loopback, for per-address limits.
    const sock: Socket = connect({ port, host, localAddress });
    let buf = Buffer.alloc(0);
    let closed = false;
    let onData: (() => void) | undefined;
    let markClosed!: () => void;
    const closedP = new Promise<void>((r) => (markClosed = r));
    sock.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      onData?.();
    });
    sock.on("error", () => {});
    sock.on("close", () => {
      closed = true;
      markClosed();
      onData?.();
    });
    sock.once("connect", () =>
      resolve({
        send: (data) => {
          if (!closed) sock.write(data);
        },
        reply: (timeoutMs = 10_000) =>
          new Promise<RawReply>((res, rej) => {
            const timer = setTimeout(() => rej(new Error(`no complete response within ${timeoutMs} ms; got ${JSON.stringify(buf.toString("latin1"))}`)), timeoutMs);
            const check = () => {
              const parsed = parseReply(buf.toString("latin1"), closed);
              if (!parsed) return;
              clearTimeout(timer);
              onData = undefined;
              res(parsed);
            };
            onData = check;
            check();
          }),
        closed: closedP,
        isClosed: () => closed,
        destroy: () => sock.destroy(),
      }),
    );
    sock.once("error", reject);
  });
}

function parseReply(all: string, closed: boolean): RawReply | undefined {
  const split = all.indexOf("\r\n\r\n");
  if (split < 0) return closed && all.length > 0 ? { status: Number(all.split(" ")[1] ?? 0), head: all, headers: {}, body: "" } : undefined;
  const head = all.slice(0, split);
  const headers: Record<string, string> = {};
  for (const line of head.split("\r\n").slice(1)) {
    const i = line.indexOf(":");
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  const length = Number(headers["content-length"] ?? 0);
  const body = all.slice(split + 4);
  if (Buffer.byteLength(body, "latin1") < length && !closed) return undefined;
  return { status: Number(head.split(" ")[1] ?? 0), head, headers, body: body.slice(0, length) };
}

/** A POST head with a declared length (the body follows separately). */
export const postHead = (path: string, length: number, extra = "") =>
  `POST ${path} HTTP/1.1\r\nHost: relay.test\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n${extra}\r\n`;

/** A POST head with a chunked body; send chunks with `chunk()`. */
export const chunkedHead = (path: string, extra = "") =>
  `POST ${path} HTTP/1.1\r\nHost: relay.test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n${extra}\r\n`;

export const chunk = (data: string) => `${Buffer.byteLength(data).toString(16)}\r\n${data}\r\n`;
