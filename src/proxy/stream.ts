import type { Logger } from "pino";
import type { Metrics } from "../ops/metrics.ts";
import type { Exchange } from "./exchange.ts";
import { COUNTED_KINDS, classify, type FailureKind } from "./failure.ts";

/**
 * The upstream's response body on its way to the client, chunk by chunk as fetch delivers it:
 * no buffering, no re-encoding (fetch ran with `decompress: false`, so these are the bytes the
 * upstream sent, still matching its Content-Encoding and Content-Length).
 *
 * Pull-based: the next upstream read starts only when the client took the previous chunk, so a
 * slow client slows the upstream instead of filling relay memory. One watchdog, two meanings:
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
  log: Logger;
  upstream: string;
  /** Called exactly once when the stream ended, however it ended. */
  onEnd?(outcome: "complete" | FailureKind): void;
}

export function relayBody(body: ReadableStream<Uint8Array>, deps: StreamDeps): ReadableStream<Uint8Array> {
  const { ex, metrics } = deps;
  const reader = body.getReader();
  let ended = false;
  let bytes = 0;
  const started = performance.now();
  metrics.proxyActiveStreams.inc();

  const end = (outcome: "complete" | FailureKind) => {
    if (ended) return;
    ended = true;
    ex.dispose();
    metrics.proxyActiveStreams.dec();
    if (outcome !== "complete" && COUNTED_KINDS.has(outcome)) metrics.upstreamErrors.labels(outcome).inc();
    const line = { upstream: deps.upstream, bytes, durationMs: Math.round(performance.now() - started) };
    if (outcome === "complete") deps.log.debug(line, "proxied stream complete");
    else if (outcome === "client_abort") deps.log.info(line, "client closed a proxied stream");
    else deps.log.warn({ ...line, kind: outcome }, "proxied stream ended abnormally");
    deps.onEnd?.(outcome);
  };

  let reading = false;
  return new ReadableStream<Uint8Array>(
    {
      start(controller) {
        // An abort while no read is outstanding (client gone between chunks, hard stop) must
        // still end the stream; an outstanding read reports it itself when it rejects.
        ex.signal.addEventListener("abort", () => {
          if (reading || ended) return;
          end(ex.reason ?? "reset");
          controller.error(ex.signal.reason);
          reader.cancel().catch(() => {});
        });
      },
      async pull(controller) {
        ex.arm(deps.idleMs, "idle");
        reading = true;
        let chunk;
        try {
          chunk = await reader.read();
        } catch (err) {
          const kind = classify(err, ex.signal.reason, true);
          end(kind);
          controller.error(err);
          return;
        } finally {
          reading = false;
        }
        ex.disarm();
        if (chunk.done) {
          end("complete");
          controller.close();
          return;
        }
        bytes += chunk.value.byteLength;
        metrics.countProxyBytes("response", chunk.value.byteLength);
        controller.enqueue(chunk.value);
        // Until the client asks for more, it is the client that is stalling: a reader that stops
        // reading for the idle timeout must not pin an upstream connection forever.
        ex.arm(deps.idleMs, "client_abort");
      },
      async cancel() {
        // The client went away (Bun cancels the body): stop the upstream at once.
        end("client_abort");
        ex.abort("client_abort");
        await reader.cancel().catch(() => {});
      },
    },
    // No read-ahead: a chunk is pulled from the upstream only when the client wants one.
    { highWaterMark: 0 },
  );
}
