import { tooLarge } from "../errors.ts";
import { readBody } from "../http/json.ts";
import type { Metrics } from "../ops/metrics.ts";
import type { Exchange } from "./exchange.ts";
import { ProxyAbort } from "./failure.ts";

/**
 * The request body on its way to the upstream. It streams (fetch with `duplex: "half"`) and is
 * counted as it goes, so the relay's limit holds for chunked bodies that declare no length.
 *
 * Small bodies with a declared length are buffered only when there is more than one upstream:
 * that makes them replayable, so a refused connection can fail over to the next upstream. A
 * streamed body can be sent once, so it never fails over.
 */

/** Largest body buffered for failover; OpenAI-style chat requests are far below this. */
export const REPLAY_MAX_BYTES = 64 * 1024;

export interface BodyTimers {
  idleMs: number;
  firstByteMs: number;
}

export interface PreparedBody {
  readonly replayable: boolean;
  /** A body for one attempt (the streamed one only once). */
  forAttempt(ex: Exchange): Bun.BodyInit | null;
}

export async function prepareBody(req: Request, limit: number, wantReplay: boolean, metrics: Metrics, timers: BodyTimers): Promise<PreparedBody> {
  const declared = req.headers.get("content-length");
  const length = declared === null ? undefined : Number(declared);
  // RFC 9110 §8.6: a declared length is known before any byte is read; refuse it at once.
  if (length !== undefined && length > limit) throw tooLarge(limit);
  const countSent = (n: number) => metrics.proxyBytes.labels("request").inc(n);

  if (!req.body || length === 0) return { replayable: true, forAttempt: () => null };

  if (wantReplay && length !== undefined && length <= REPLAY_MAX_BYTES) {
    const bytes = await readBody(req, limit);
    return {
      replayable: true,
      forAttempt: () => {
        countSent(bytes.byteLength);
        return bytes;
      },
    };
  }

  const source = req.body;
  let used = false;
  return {
    replayable: false,
    forAttempt: (ex) => {
      if (used) throw new Error("proxy: a streamed request body can be sent only once");
      used = true;
      return meter(source, limit, ex, timers, countSent);
    },
  };
}

/**
 * Pull-based pass-through: nothing is read from the client before fetch asks for it, so
 * backpressure reaches the client. Until the first pull the first-byte watchdog (armed when the
 * fetch starts) bounds connecting; then the idle watchdog runs, charged to the client while a
 * chunk is awaited from it and to the upstream between pulls; when the body is complete the
 * first-byte watchdog takes over.
 */
function meter(source: ReadableStream<Uint8Array>, limit: number, ex: Exchange, timers: BodyTimers, countSent: (n: number) => void) {
  const reader = source.getReader();
  let total = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      // Waiting on the client's next chunk: a stall here is the client's (408), while a stall
      // between pulls means the upstream stopped reading (504).
      if (!ex.headReceived) ex.arm(timers.idleMs, "client_idle");
      let chunk;
      try {
        chunk = await reader.read();
      } catch (err) {
        // The client's upload broke off: nothing sensible can reach the upstream any more.
        ex.abort("client_abort");
        controller.error(err);
        return;
      }
      if (chunk.done) {
        if (!ex.headReceived) ex.arm(timers.firstByteMs, "timeout");
        controller.close();
        return;
      }
      total += chunk.value.byteLength;
      if (total > limit) {
        ex.abort("too_large");
        await reader.cancel().catch(() => {});
        controller.error(new ProxyAbort("too_large"));
        return;
      }
      countSent(chunk.value.byteLength);
      if (!ex.headReceived) ex.arm(timers.idleMs, "idle");
      controller.enqueue(chunk.value);
    },
    cancel(reason) {
      return reader.cancel(reason).catch(() => {});
    },
  });
}
