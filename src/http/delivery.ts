import { BUN_MAX_IDLE_TIMEOUT_SECONDS, type RequestContext } from "./context.ts";

/**
 * Handing out something that exists once: an answer a retrieve takes out of the store. Written as
 * one body, a large answer could be cut off without anyone knowing: Bun's idle timeout keeps
 * running while a response is being written, so a client reading a few megabytes more slowly than
 * the body takes to cross its timeout loses the connection mid-body (oven-sh/bun#41602), after the
 * store had already given the answer up. So a large answer is written chunk by chunk with the
 * socket's idle timeout stretched to the time a slow but steady reader needs, and if the
 * connection ends before the last chunk went out, `undelivered` puts the answer back for the
 * client's next retrieve: a truncated body (no final chunk, RFC 9112 §7.1) tells the client to
 * ask again, and nothing is lost.
 */

/** Bodies up to this size are written in one piece: the socket's buffers take them at once. */
export const DELIVERY_STREAM_MIN_BYTES = 64 * 1024;
/** Size of each write of a large body (one flush per chunk, so Bun never buffers the whole body). */
export const DELIVERY_CHUNK_BYTES = 64 * 1024;
/**
 * Slowest steady reader a large body is given time for: the idle timeout is stretched by the body's
 * size at this rate (4 MiB: 256 s more). The rate below which uWebSockets itself stops resetting
 * the idle timer of an upload, so the same floor holds both ways.
 */
export const DELIVERY_MIN_READ_BYTES_PER_SECOND = 16 * 1024;

const JSON_HEADERS = { "Content-Type": "application/json" } as const;
const encoder = new TextEncoder();

/**
 * A 200 JSON answer that is delivered or given back: small ones as a plain body, large ones
 * streamed (see the module comment). `undelivered` runs at most once, only for a large body the
 * connection did not take whole.
 */
export type Deliver = (body: unknown, req: Request, ctx: RequestContext, undelivered: () => void) => Response;

/** deliverOnce for a server whose idle timeout is `idleTimeoutSeconds` (RELAY_IDLE_TIMEOUT_SECONDS). */
export function createDelivery(idleTimeoutSeconds: number): Deliver {
  return function deliverOnce(body, req, ctx, undelivered) {
    const text = JSON.stringify(body);
    // Characters are at most three UTF-8 bytes each: anything that can reach the threshold is encoded.
    if (text.length * 3 <= DELIVERY_STREAM_MIN_BYTES) return new Response(text, { headers: JSON_HEADERS });
    const bytes = encoder.encode(text);
    if (bytes.byteLength <= DELIVERY_STREAM_MIN_BYTES) return new Response(bytes, { headers: JSON_HEADERS });
    ctx.holdWhileStreaming(Math.min(BUN_MAX_IDLE_TIMEOUT_SECONDS, idleTimeoutSeconds + Math.ceil(bytes.byteLength / DELIVERY_MIN_READ_BYTES_PER_SECOND)));
    return new Response(new ReadableStream(new OnceSource(bytes, req.signal, ctx, undelivered)), {
      headers: { ...JSON_HEADERS, "Content-Length": String(bytes.byteLength) },
    });
  };
}

/** Writes the body, one flushed chunk at a time; gives it back if the connection ends first. */
class OnceSource implements Bun.DirectUnderlyingSource<Uint8Array> {
  readonly type = "direct";
  private settled = false;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly signal: AbortSignal,
    private readonly ctx: RequestContext,
    private readonly undelivered: () => void,
  ) {}

  async pull(controller: ReadableStreamDirectController): Promise<void> {
    const { bytes } = this;
    for (let off = 0; off < bytes.byteLength; off += DELIVERY_CHUNK_BYTES) {
      const chunk = bytes.subarray(off, off + DELIVERY_CHUNK_BYTES);
      let written = controller.write(chunk);
      if (typeof written !== "number") written = await this.unlessGone(written);
      const flushed = controller.flush();
      if (typeof flushed !== "number") await this.unlessGone(flushed);
      // A write of nothing, or an abort while waiting: the client is gone.
      if (this.signal.aborted || written === 0) {
        this.lost();
        // Errored, not closed: the connection ends without the final chunk, so the client can
        // tell the body is incomplete (RFC 9112 §7.1) and asks again.
        controller.close(new Error("client went away before the answer was written"));
        return;
      }
    }
    this.settled = true;
    this.ctx.idleAgain();
    controller.close();
  }

  cancel(): void {
    this.lost();
  }

  private lost(): void {
    if (this.settled) return;
    this.settled = true;
    this.undelivered();
  }

  /** `pending`, or 0 as soon as the request's signal says the client left (a pending write may never settle then). */
  private unlessGone(pending: Promise<number | void>): Promise<number> {
    const { signal } = this;
    if (signal.aborted) return Promise.resolve(0);
    return new Promise<number>((resolve) => {
      const onAbort = () => resolve(0);
      signal.addEventListener("abort", onAbort, { once: true });
      pending.then(
        (n) => {
          signal.removeEventListener("abort", onAbort);
          resolve(typeof n === "number" ? n : 1);
        },
        () => resolve(0),
      );
    });
  }
}
