/**
 * A raw-socket HTTP/1.1 client for many concurrent SSE streams (`npm run bench`, sections
 * "proxy" and "memory"). fetch() is not used: Bun runs at most 256 fetches at once
 * (BUN_CONFIG_MAX_HTTP_REQUESTS) and would add its own queueing to the figures. One connection
 * per stream; the request is written when the socket opens; chunked bodies are decoded; each
 * `data:` event ({"i","sentAt"} from bench/sse-upstream.ts) is stamped with its arrival time.
 */

/** Wall-clock milliseconds with sub-ms precision, comparable across processes on one machine. */
export const wallMs = () => performance.timeOrigin + performance.now();

export interface StreamResult {
  status: number;
  /** Request written -> first event (event 0, sent at once by the upstream) arrived, ms. */
  ttfbMs: number;
  /** Arrival minus send time of events 1.. (event 0 is the TTFB's), ms. */
  latencies: number[];
  events: number;
  error?: string;
}

export interface OpenStream {
  /** Resolves when the stream ended (all events, server close, error or close()). */
  done: Promise<StreamResult>;
  /** Resolves at the first event (or when the stream ended without one). */
  first: Promise<void>;
  close(): void;
}

class ChunkedBody {
  private raw = "";
  private remaining = -1;
  ended = false;
  /** Feeds wire bytes (latin1 text) and returns the decoded payload they completed. */
  push(s: string): string {
    this.raw += s;
    let out = "";
    for (;;) {
      if (this.remaining < 0) {
        const nl = this.raw.indexOf("\r\n");
        if (nl < 0) return out;
        this.remaining = parseInt(this.raw.slice(0, nl), 16);
        this.raw = this.raw.slice(nl + 2);
        if (this.remaining === 0) {
          this.ended = true;
          return out;
        }
      }
      if (this.raw.length < this.remaining + 2) {
        // take what is there; the rest of this chunk follows
        const take = Math.min(this.raw.length, this.remaining);
        out += this.raw.slice(0, take);
        this.raw = this.raw.slice(take);
        this.remaining -= take;
        if (this.remaining > 0) return out;
      }
      if (this.raw.length < 2) return out;
      out += this.raw.slice(0, this.remaining);
      this.raw = this.raw.slice(this.remaining + 2);
      this.remaining = -1;
    }
  }
}

/**
 * Opens one stream: `GET path` on 127.0.0.1:port. `wantEvents` ends it after that many events
 * (0: until the server ends it or close() is called). `timeoutMs` bounds it whatever happens.
 */
export function openSse(port: number, path: string, wantEvents: number, timeoutMs: number): OpenStream {
  const res: StreamResult = { status: 0, ttfbMs: NaN, latencies: [], events: 0 };
  let finish!: (r: StreamResult) => void;
  let firstSeen!: () => void;
  const done = new Promise<StreamResult>((r) => (finish = r));
  const first = new Promise<void>((r) => (firstSeen = r));
  let sock: { end(): void; terminate?(): void } | undefined;
  let sentAt = 0;
  let head = "";
  let headDone = false;
  let chunked: ChunkedBody | undefined;
  let body = "";
  let ended = false;
  const end = (error?: string) => {
    if (ended) return;
    ended = true;
    clearTimeout(timer);
    if (error !== undefined && res.events < wantEvents) res.error = error;
    firstSeen();
    finish(res);
    try {
      sock?.end();
    } catch {}
  };
  const timer = setTimeout(() => end(`timed out after ${timeoutMs} ms with ${res.events} events`), timeoutMs);
  const onPayload = (text: string, arrived: number) => {
    body += text;
    let sep: number;
    while ((sep = body.indexOf("\n\n")) >= 0) {
      const event = body.slice(0, sep);
      body = body.slice(sep + 2);
      const data = event.split("\n").find((l) => l.startsWith("data: "));
      if (!data) continue;
      const e = JSON.parse(data.slice(6)) as { i: number; sentAt: number };
      if (res.events === 0) {
        res.ttfbMs = arrived - sentAt;
        firstSeen();
      } else res.latencies.push(arrived - e.sentAt);
      res.events++;
      if (wantEvents > 0 && res.events >= wantEvents) return end();
    }
  };
  Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      open(s) {
        sock = s;
        sentAt = wallMs();
        s.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: text/event-stream\r\nUser-Agent: tokenplace-bench\r\n\r\n`);
      },
      data(_s, data) {
        const arrived = wallMs();
        let text = data.toString("latin1");
        if (!headDone) {
          head += text;
          const at = head.indexOf("\r\n\r\n");
          if (at < 0) return;
          headDone = true;
          res.status = Number(head.slice(9, 12));
          if (res.status !== 200) return end(`status ${res.status}`);
          if (/\r\ntransfer-encoding:\s*chunked/i.test(head.slice(0, at + 2))) chunked = new ChunkedBody();
          text = head.slice(at + 4);
        }
        if (chunked) {
          onPayload(chunked.push(text), arrived);
          if (chunked.ended) end("stream ended early");
        } else onPayload(text, arrived);
      },
      close() {
        end("connection closed early");
      },
      error(_s, err) {
        end(err.message);
      },
      connectError(_s, err) {
        end(`connect: ${err.message}`);
      },
    },
  }).catch((err: unknown) => end(`connect: ${err instanceof Error ? err.message : String(err)}`));
  return { done, first, close: () => end() };
}
