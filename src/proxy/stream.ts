import type { Logger } from "pino";
import type { Metrics } from "../ops/metrics.ts";
import type { Exchange } from "./exchange.ts";
import { COUNTED_KINDS, classify, type FailureKind } from "./failure.ts";

/**
 * The upstream's response body on its way to the client, chunk by chunk as fetch delivers it:
 * no buffering, no re-encoding (fetch ran with `decompress: false`, so these are the bytes the
 * upstream sent, still matching its Content-Encoding and Content-Length).
 *
 * Pull-based: the next upstream read starts only when the client took the previous chunk (a
 * write that reports backpressure is awaited), so a slow client slows the upstream instead of
 * filling relay memory. One watchdog, two meanings:
 * while a read is outstanding it times the upstream's silence ("idle"); while the relay waits
 * for the client to take the next chunk it times the client's stall (counted as client_abort).
 *
 * A stream that breaks (upstream died, idle timeout, hard stop) is errored, not closed: Bun then
 * drops the connection without the final chunk, so the client can tell the answer is incomplete
 * (RFC 9112 §7.1, §8) instead of taking a truncated answer for a whole one.
 */

export interface StreamDeps {
  ex: Exchange;
  idleMs: number;
  metrics: Metrics;
  /**
   * The request's context: its logger is asked for only when the stream ends with something to say
   * (it is built on first use); a complete stream gives the connection its idle timeout back.
   */
  ctx: { readonly log: Logger; idleAgain?(): void };
  /** False when debug lines are dropped: the "complete" line is then not built (nor the logger). */
  debug?: boolean;
  upstream: string;
  /** Called exactly once when the stream ended, however it ended. */
  onEnd?(outcome: "complete" | FailureKind): void;
}

export function relayBody(body: ReadableStream<Uint8Array>, deps: StreamDeps): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>(new RelaySource(body, deps));
}

/**
 * The direct stream's source (Bun): each chunk is written straight into the response's socket,
 * with no queue and no second stream in between; awaiting a write that reports backpressure keeps
 * the pull-based pacing (the next upstream read starts once the client took the chunk).
 *
 * One object per stream whose methods live on the prototype, and which is itself the abort
 * listener: a closure per callback (end, fail, wait, pull, cancel, the listener) was allocated for
 * every new stream before its first byte, and garbage for the collector after it.
 */
const readerOf = (body: ReadableStream<Uint8Array>) => body.getReader();
type Reader = ReturnType<typeof readerOf>;

class RelaySource implements Bun.DirectUnderlyingSource<Uint8Array> {
  readonly type = "direct";
  private readonly reader: Reader;
  private readonly deps: StreamDeps;
  private readonly ex: Exchange;
  private readonly started = performance.now();
  private ended = false;
  private bytes = 0;
  /** Settles the wait in progress for the client (untilAborted) when the exchange is aborted. */
  private wake: (() => void) | undefined;
  private listening = false;

  constructor(body: ReadableStream<Uint8Array>, deps: StreamDeps) {
    this.reader = readerOf(body);
    this.deps = deps;
    this.ex = deps.ex;
    deps.metrics.proxyActiveStreams.inc();
  }

  private end(outcome: "complete" | FailureKind): void {
    if (this.ended) return;
    this.ended = true;
    const { deps } = this;
    this.ex.dispose();
    deps.metrics.proxyActiveStreams.dec();
    // A kept-alive connection idles out again after a whole stream (a broken one is dropped).
    if (outcome === "complete") deps.ctx.idleAgain?.();
    if (outcome !== "complete" && COUNTED_KINDS.has(outcome)) deps.metrics.upstreamErrors.labels(outcome).inc();
    // The line is built only when it will be written: a complete stream logs at debug.
    if (outcome !== "complete" || deps.debug !== false) {
      const line = { upstream: deps.upstream, bytes: this.bytes, durationMs: Math.round(performance.now() - this.started) };
      if (outcome === "complete") deps.ctx.log.debug(line, "proxied stream complete");
      else if (outcome === "client_abort") deps.ctx.log.info(line, "client closed a proxied stream");
      else deps.ctx.log.warn({ ...line, kind: outcome }, "proxied stream ended abnormally");
    }
    deps.onEnd?.(outcome);
  }

  private fail(kind: FailureKind, err: unknown): Error {
    this.end(kind);
    return err instanceof Error ? err : new Error(String(err));
  }

  /** The exchange's abort signal fired (an EventListener object: see untilAborted). */
  handleEvent(): void {
    this.wake?.();
  }

  /**
   * An abort while a write waits for the client (client gone, hard stop, the client-stall
   * watchdog) must still end the stream; an outstanding read reports it itself when it rejects.
   * One promise per wait, settled by whichever comes first: racing each wait against one
   * stream-long "aborted" promise would leave a reaction on it per backpressured chunk, kept
   * until the stream ends. The abort listener is added at the first such wait: most streams
   * never wait for the client.
   */
  private untilAborted<T>(pending: Promise<T>, onAbort: T): Promise<T> {
    if (this.ex.aborted) return Promise.resolve(onAbort);
    if (!this.listening) {
      this.listening = true;
      this.ex.signal.addEventListener("abort", this, { once: true });
    }
    return new Promise<T>((resolve, reject) => {
      this.wake = () => resolve(onAbort);
      pending.then(resolve, reject);
    });
  }

  async pull(controller: ReadableStreamDirectController): Promise<void> {
    const { ex, reader, deps } = this;
    for (;;) {
      ex.arm(deps.idleMs, "idle");
      let chunk: Awaited<ReturnType<Reader["read"]>>;
      try {
        chunk = await reader.read();
      } catch (err) {
        controller.close(this.fail(classify(err, ex.signal.reason, true), err));
        return;
      }
      ex.disarm();
      if (chunk.done) {
        this.end("complete");
        controller.close();
        return;
      }
      const n = chunk.value.byteLength;
      this.bytes += n;
      deps.metrics.countProxyBytes("response", n);
      // Until the client has taken the chunk, it is the client that is stalling: a reader that
      // stops reading for the idle timeout must not pin an upstream connection forever.
      ex.arm(deps.idleMs, "client_abort");
      let written = controller.write(chunk.value);
      if (typeof written !== "number") written = await this.untilAborted(written, -1);
      else {
        // Out now: an event must not wait in a buffer for the next one.
        const flushed = controller.flush();
        if (typeof flushed !== "number") await this.untilAborted(flushed, -1);
      }
      this.wake = undefined;
      if (ex.aborted || (written === 0 && n > 0)) {
        // Hard stop, watchdog, or the client went away (a write of 0 bytes says so).
        const kind = ex.reason ?? "client_abort";
        ex.abort(kind);
        reader.cancel().catch(() => {});
        controller.close(this.fail(kind, ex.signal.reason));
        return;
      }
    }
  }

  async cancel(): Promise<void> {
    // The client went away (Bun cancels the body): stop the upstream at once.
    this.end("client_abort");
    this.ex.abort("client_abort");
    await this.reader.cancel().catch(() => {});
  }
}
