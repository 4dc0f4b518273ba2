import { tooLarge } from "../errors.ts";
import { readBody } from "../http/json.ts";
import { holdForBody } from "../http/body-budget.ts";
import type { Metrics } from "../ops/metrics.ts";
import type { Exchange } from "./exchange.ts";
import { ProxyAbort } from "./failure.ts";

/**
 * The request body on its way to the upstream. It streams (fetch with `duplex: "half"`) and is
 * counted as it goes, so the relay's limit holds for chunked bodies that declare no length.
 *
 * Small bodies with a declared length (the usual chat POST) are read whole before the upstream is
 * contacted, as nginx's proxy_request_buffering does: a client trickling one never holds an
 * upstream connection, only a relay request (RELAY_MAX_CONNECTIONS, the body budget and deadline),
 * and the buffered body is replayable, so a refused connection can fail over to the next
 * upstream. Larger and chunked bodies stream; a streamed body can be sent once, so it never fails
 * over.
 *
 * The whole upload must arrive by the request's body deadline (RELAY_BODY_TIMEOUT_MS from its
 * arrival): a client sending one byte every few seconds resets every idle timer, and while it
 * trickles it holds one of the upstream's connections. Past the deadline the exchange is aborted
 * (408 body_timeout before the response head, a cut stream after it).
 */

/** Largest declared body buffered before the upstream is contacted; OpenAI-style chat requests are far below this. */
export const REPLAY_MAX_BYTES = 64 * 1024;

export interface BodyTimers {
  idleMs: number;
  firstByteMs: number;
}

/** The upload's deadline and the client's upload slot (src/proxy/uploads.ts). */
export interface UploadBounds {
  /** performance.now() by which the whole body must have been received. */
  deadline: number;
  /** Gives the upload slot back; idempotent. Called once the body is complete or has failed. */
  done(): void;
}

const UNBOUNDED: UploadBounds = { deadline: Number.POSITIVE_INFINITY, done: () => {} };

export interface PreparedBody {
  readonly replayable: boolean;
  /** A body for one attempt (the streamed one only once). */
  forAttempt(ex: Exchange): Bun.BodyInit | null;
}

/** A request without a body: nothing to send, replayable on any upstream. */
const NO_BODY: PreparedBody = { replayable: true, forAttempt: () => null };

/**
 * The body for the upstream attempts. Synchronous when there is none (every GET), so the
 * common request pays no promise and no await here; a promise when a small body is read first.
 */
export function prepareBody(
  req: Request,
  limit: number,
  metrics: Metrics,
  timers: BodyTimers,
  upload: UploadBounds = UNBOUNDED,
): PreparedBody | Promise<PreparedBody> {
  const declared = req.headers.get("content-length");
  const length = declared === null ? undefined : Number(declared);
  // RFC 9110 §8.6: a declared length is known before any byte is read; refuse it at once.
  if (length !== undefined && length > limit) throw tooLarge(limit);

  if (!req.body || length === 0) {
    upload.done();
    return NO_BODY;
  }
  const countSent = (n: number) => metrics.countProxyBytes("request", n);

  if (length !== undefined && length <= REPLAY_MAX_BYTES) return bufferBody(req, limit, upload, countSent);

  const source = req.body;
  // The upload deadline, not the idle timeout, ends a slow upload (with its 408 or abort).
  holdForBody(req);
  let used = false;
  return {
    replayable: false,
    forAttempt: (ex) => {
      if (used) throw new Error("proxy: a streamed request body can be sent only once");
      used = true;
      return meter(source, limit, ex, timers, countSent, upload);
    },
  };
}

/** A small declared body, read whole before the upstream is contacted (replayable). */
async function bufferBody(req: Request, limit: number, upload: UploadBounds, countSent: (n: number) => void): Promise<PreparedBody> {
  // readBody applies the body deadline (408) and the in-flight body budget itself.
  let bytes: Uint8Array;
  try {
    bytes = await readBody(req, limit);
  } finally {
    upload.done();
  }
  return {
    replayable: true,
    forAttempt: () => {
      countSent(bytes.byteLength);
      return bytes;
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
function meter(
  source: ReadableStream<Uint8Array>,
  limit: number,
  ex: Exchange,
  timers: BodyTimers,
  countSent: (n: number) => void,
  upload: UploadBounds,
) {
  const reader = source.getReader();
  let total = 0;
  // The upload deadline has a timer of its own: the exchange's single watchdog is re-armed per
  // chunk and, once the head arrived, no longer watches the upload at all.
  let deadline: ReturnType<typeof setTimeout> | undefined;
  const finished = () => {
    clearTimeout(deadline);
    upload.done();
  };
  if (Number.isFinite(upload.deadline)) {
    deadline = setTimeout(() => {
      ex.abort("upload_timeout");
      finished();
    }, Math.max(0, upload.deadline - performance.now()));
  }
  // An attempt that ended any other way (refused, timed out, client gone) frees the slot at once.
  ex.signal.addEventListener("abort", finished, { once: true });
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
        finished();
        ex.abort("client_abort");
        controller.error(err);
        return;
      }
      if (chunk.done) {
        finished();
        if (!ex.headReceived) ex.arm(timers.firstByteMs, "timeout");
        controller.close();
        return;
      }
      total += chunk.value.byteLength;
      if (total > limit) {
        finished();
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
      finished();
      return reader.cancel(reason).catch(() => {});
    },
  });
}
