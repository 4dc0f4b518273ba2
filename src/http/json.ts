import { RelayError, tooLarge } from "../errors.ts";

const JSON_HEADERS = { "Content-Type": "application/json" } as const;

export function json(status: number, body: unknown, headers?: Record<string, string>): Response {
  return new Response(JSON.stringify(body), { status, headers: headers ? { ...JSON_HEADERS, ...headers } : JSON_HEADERS });
}

export function errorResponse(err: RelayError): Response {
  return json(err.status, err.toBody(), err.headers);
}

/**
 * Reads the body as bytes, refusing more than `limit` bytes with a JSON 413 (checked against
 * Content-Length first, then while streaming, because chunked bodies have no length up front).
 */
export async function readBody(req: Request, limit: number): Promise<Uint8Array> {
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) throw tooLarge(limit);
  if (!req.body) return new Uint8Array(0);
  // With a declared length the framing bounds the body (RFC 9112 §6.2), so read it in one go:
  // several times cheaper than pumping a reader, which only chunked bodies need.
  if (declared !== null) return new Uint8Array(await req.arrayBuffer());
  const reader = req.body.getReader();
  const parts: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      throw tooLarge(limit);
    }
    parts.push(value);
  }
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(size);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.byteLength;
  }
  return out;
}

export type JsonObject = Record<string, unknown>;

/**
 * Parses a JSON object body. Returns undefined for anything that is not a JSON object (the
 * protocol answers each route's own 400 body for that); throws 413 for oversize bodies.
 */
export async function readJsonObject(req: Request, limit: number): Promise<JsonObject | undefined> {
  const bytes = await readBody(req, limit);
  if (bytes.byteLength === 0) return undefined;
  try {
    const value: unknown = JSON.parse(new TextDecoder().decode(bytes));
    return value !== null && typeof value === "object" && !Array.isArray(value) ? (value as JsonObject) : undefined;
  } catch {
    return undefined;
  }
}
