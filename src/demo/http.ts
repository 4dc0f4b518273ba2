/**
 * Small HTTP helpers shared by the demo node and client. Every wait is bounded and abortable, and
 * nothing here leaves a timer or a rejected promise behind (an unhandled rejection kills a Bun
 * process).
 */

export type Json = Record<string, unknown>;

/** Who saw which body: lets the demo narrate the wire and the tests prove it carried ciphertext. */
export interface WireRecord {
  from: "client" | "node";
  method: string;
  path: string;
  status: number;
  request?: Json;
  response: Json;
}
export type WireTap = (record: WireRecord) => void;

export interface CallOptions {
  /** Stop signal of the caller (node/client shutdown). */
  signal?: AbortSignal;
  /** Per-request cap; must exceed the relay's long-poll hold for held routes. */
  timeoutMs: number;
  headers?: Record<string, string>;
}

/** An abort reason we can recognise, so shutdown is not reported as a failure. */
export const isAbort = (err: unknown): boolean =>
  err instanceof Error && (err.name === "AbortError" || err.name === "TimeoutError");

/**
 * One JSON request; returns the status and the parsed object (non-JSON bodies are wrapped, not
 * thrown) so callers decide what a status means. Rejects on network errors and aborts.
 */
export async function callJson(
  base: string,
  method: "GET" | "POST",
  path: string,
  body: Json | undefined,
  opts: CallOptions,
): Promise<{ status: number; json: Json }> {
  const timeout = AbortSignal.timeout(opts.timeoutMs);
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  const headers: Record<string, string> = { ...opts.headers };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(base + path, {
    method,
    headers,
    body: body === undefined ? null : JSON.stringify(body),
    signal,
  });
  const text = await res.text();
  let json: Json;
  try {
    const parsed: unknown = text ? JSON.parse(text) : {};
    json = parsed !== null && typeof parsed === "object" && !Array.isArray(parsed) ? (parsed as Json) : { value: parsed };
  } catch {
    json = { unparsed: text.slice(0, 200) };
  }
  return { status: res.status, json };
}

/** Resolves after `ms` or as soon as `signal` aborts; never rejects, always clears its timer. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0 || signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** Human-readable preview of an opaque wire string: length and a prefix, never the whole thing. */
export const preview = (value: unknown, n = 24): string =>
  typeof value === "string" ? `${value.length} chars "${value.slice(0, n)}…"` : JSON.stringify(value);
