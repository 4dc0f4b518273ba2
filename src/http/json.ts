import { RelayError, tooLarge } from "../errors.ts";
import { BODY_BUDGET_SMALL_BYTES } from "../config/defaults.ts";
import { CLOSE, bodyPolicy, bodyTimeout, holdForBody, type BodyPolicy } from "./body-budget.ts";

const JSON_HEADERS = { "Content-Type": "application/json" } as const;

export function json(status: number, body: unknown, headers?: Record<string, string>): Response {
  return new Response(JSON.stringify(body), { status, headers: headers ? { ...JSON_HEADERS, ...headers } : JSON_HEADERS });
}

export function errorResponse(err: RelayError): Response {
  return json(err.status, err.toBody(), err.headers);
}

/**
 * Deepest nesting of arrays and objects a JSON body may have. Real peers send 2-3 levels (an
 * envelope, capabilities, a stream chunk object); JSON.parse accepts millions, and a document
 * nested past ~10^5 levels parses but cannot be serialised again (JSON.stringify overflows the
 * stack), which made a stored stream chunk answer 500 on every later /stream/retrieve.
 */
export const MAX_JSON_DEPTH = 32;
/**
 * Most structural elements a JSON body may have: every `[`, `{` and `,` outside strings, roughly
 * the number of values. Peers send tens (capabilities list at most 64 model ids); 4 MiB of `[0,0,`
 * is two million values and about 100 MB of heap once parsed.
 */
export const MAX_JSON_ELEMENTS = 10_000;

export const jsonTooDeep = (max: number) => new RelayError(400, "json_too_deep", `JSON body is nested deeper than ${max} levels`);
export const jsonTooManyElements = (max: number) =>
  new RelayError(400, "json_too_many_elements", `JSON body has more than ${max} elements`);

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
/** The characters the scan looks at; everything else is skipped by the regex engine. */
const STRUCTURAL = /["[\]{},]/g;

/**
 * Refuses a body nested deeper than `maxDepth` or with more than `maxElements` elements, before
 * JSON.parse builds anything. One pass over the text that stops at the first violation (33
 * characters into a 4 MiB `[[[[...`); strings are skipped with indexOf and everything else by the
 * regex engine, so a 4 MiB ciphertext envelope scans in ~0.1 ms and 4 MiB of white space in ~1.5 ms.
 * Malformed JSON is left to JSON.parse: the scan only ever refuses, never accepts.
 */
export function checkJsonShape(text: string, maxDepth = MAX_JSON_DEPTH, maxElements = MAX_JSON_ELEMENTS): void {
  // Every element counted is one character and every level opens with `[` or `{`: a text no
  // longer than maxElements with at most maxDepth of those characters anywhere (in strings too)
  // cannot be refused, and two native scans decide that for the usual flat envelope.
  if (text.length <= maxElements && countAtMost(text, "{", countAtMost(text, "[", maxDepth)) >= 0) return;
  let depth = 0;
  let elements = 0;
  const re = STRUCTURAL;
  re.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) {
    let i = m.index;
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      // To the closing quote: the next quote not escaped by an odd run of backslashes.
      for (;;) {
        const q = text.indexOf('"', i + 1);
        if (q < 0) return; // unterminated string: JSON.parse refuses it
        let k = q - 1;
        while (text.charCodeAt(k) === BACKSLASH) k--;
        i = q;
        if ((q - 1 - k) % 2 === 0) break;
      }
      re.lastIndex = i + 1;
    } else if (c === 0x5b || c === 0x7b) {
      // [ {
      if (++depth > maxDepth) throw jsonTooDeep(maxDepth);
      if (++elements > maxElements) throw jsonTooManyElements(maxElements);
    } else if (c === 0x5d || c === 0x7d) {
      // ] }
      depth--;
    } else if (++elements > maxElements) {
      // ,
      throw jsonTooManyElements(maxElements);
    }
  }
}

/** `budget` less the occurrences of `ch` in `text`, or -1 as soon as they are more than `budget`. */
function countAtMost(text: string, ch: string, budget: number): number {
  if (budget < 0) return -1;
  for (let i = text.indexOf(ch); i >= 0; i = text.indexOf(ch, i + 1)) if (--budget < 0) return -1;
  return budget;
}

const EMPTY = new Uint8Array(0);
const decoder = new TextDecoder();

interface HeldBody<T extends Uint8Array | string = Uint8Array> {
  /** The body's bytes, or (asked for as text, with a declared length) its text. */
  bytes: T;
  /** Gives the body's bytes back to the relay's in-flight budget (idempotent). */
  release(): void;
}

/**
 * Reads the body as bytes, refusing more than `limit` bytes with a JSON 413 (checked against
 * Content-Length first, then while streaming, because chunked bodies have no length up front).
 * For a request the app admitted, the relay's body budget (503 busy) and the body deadline (408)
 * apply too.
 */
export async function readBody(req: Request, limit: number): Promise<Uint8Array> {
  const held = await readBodyHeld(req, limit);
  held.release();
  return held.bytes;
}

async function readBodyHeld(req: Request, limit: number): Promise<HeldBody>;
async function readBodyHeld(req: Request, limit: number, asText: true): Promise<HeldBody<Uint8Array | string>>;
async function readBodyHeld(req: Request, limit: number, asText = false): Promise<HeldBody<Uint8Array | string>> {
  const declared = req.headers.get("content-length");
  const policy = bodyPolicy(req);
  // The route's own limit (RouteSpec.maxBodyBytes) when it is the smaller: a chunked body is cut
  // there too (a declared one was refused at admission).
  const routeLimit = policy?.maxBytes !== undefined && policy.maxBytes < limit;
  if (routeLimit) limit = policy!.maxBytes!;
  const over = () => (routeLimit && policy!.tooLarge ? policy!.tooLarge() : tooLarge(limit));
  if (declared !== null && Number(declared) > limit) throw over();
  // A declared length is read with text()/arrayBuffer() below (empty for 0) without req.body,
  // which would build a ReadableStream and send the read down Bun's slower stream path.
  if (declared === null && !req.body) return { bytes: EMPTY, release: () => {} };
  const budget = policy?.budget;
  let reserved = 0;
  // Asked once a body is large enough to reserve (small ones never are), so the usual small body
  // costs no client-identity lookup; release gives back under the same owner.
  let owner: string | undefined;
  const node = policy?.node === true;
  const release = () => {
    budget?.release(reserved, owner, node);
    reserved = 0;
  };
  const deadline = policy ? startDeadline(policy) : undefined;
  holdForBody(req);
  try {
    // With a declared length the framing bounds the body (RFC 9112 §6.2), so read it in one go:
    // several times cheaper than pumping a reader, which only chunked bodies need. Its whole size
    // is reserved first: a client trickling a declared body holds its share all along.
    if (declared !== null) {
      const size = Number(declared);
      const n = Number.isSafeInteger(size) && size >= 0 ? size : limit;
      if (budget && n > BODY_BUDGET_SMALL_BYTES) {
        owner = policy!.client?.clientId;
        const refused = budget.tryReserve(n, owner, node);
        if (refused) throw refused;
        reserved = n;
      }
      // As text when the caller parses it: Bun decodes in one step, instead of copying the bytes
      // out and decoding them again (about 3 µs of a 2 KB envelope).
      const reading: Promise<ArrayBuffer | string> = asText ? req.text() : req.arrayBuffer();
      let got: ArrayBuffer | string;
      if (!deadline) got = await reading;
      else {
        // On timeout the 408 carries Connection: close; the socket closing rejects this read.
        reading.catch(() => {});
        got = await Promise.race([reading, deadline.expired]);
      }
      return { bytes: typeof got === "string" ? got : new Uint8Array(got), release };
    }
    // No declared length: req.body was found non-null above.
    const reader = req.body!.getReader();
    const parts: Uint8Array[] = [];
    let size = 0;
    for (;;) {
      let chunk: Awaited<ReturnType<typeof reader.read>>;
      try {
        chunk = await (deadline ? Promise.race([reader.read(), deadline.expired]) : reader.read());
      } catch (err) {
        await reader.cancel().catch(() => {});
        throw err;
      }
      const { done, value } = chunk;
      if (done) break;
      size += value.byteLength;
      if (size > limit) {
        await reader.cancel().catch(() => {});
        throw over();
      }
      // Past the small-body size the whole body so far is reserved, then each chunk.
      if (budget && size > BODY_BUDGET_SMALL_BYTES) {
        const n = reserved === 0 ? size : value.byteLength;
        if (reserved === 0) owner = policy!.client?.clientId;
        const refused = budget.tryReserve(n, owner, node);
        if (refused) {
          await reader.cancel().catch(() => {});
          throw refused;
        }
        reserved += n;
      }
      parts.push(value);
    }
    if (parts.length === 1) return { bytes: parts[0]!, release };
    const out = new Uint8Array(size);
    let off = 0;
    for (const p of parts) {
      out.set(p, off);
      off += p.byteLength;
    }
    return { bytes: out, release };
  } catch (err) {
    release();
    throw err instanceof RelayError ? err : unreadable(req);
  } finally {
    deadline?.clear();
  }
}

/**
 * A body read that failed on its own: the client closed the connection mid-body (Bun rejects the
 * read). A refusal of the request, not a relay fault: no 500, no error log line per hostile client.
 */
function unreadable(req: Request): RelayError {
  return req.signal.aborted
    ? new RelayError(499, "client_closed_request", "Client closed the request before its body arrived")
    : new RelayError(400, "body_unreadable", "The request body could not be read", undefined, CLOSE);
}

/** A promise that rejects with 408 at the request's body deadline (never resolves). */
function startDeadline(policy: BodyPolicy): { expired: Promise<never>; clear(): void } {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(bodyTimeout(policy.timeoutMs)), Math.max(0, policy.deadline - performance.now()));
  });
  expired.catch(() => {});
  return { expired, clear: () => clearTimeout(timer) };
}

export type JsonObject = Record<string, unknown>;

/**
 * Parses a JSON object body. Returns undefined for anything that is not a JSON object (the
 * protocol answers each route's own 400 body for that); throws 413 for oversize bodies and 400
 * json_too_deep / json_too_many_elements for shapes that would be expensive to parse.
 */
export async function readJsonObject(req: Request, limit: number): Promise<JsonObject | undefined> {
  const held = await readBodyHeld(req, limit, true);
  try {
    const body = held.bytes;
    const text = typeof body === "string" ? body : body.byteLength === 0 ? "" : decoder.decode(body);
    if (text.length === 0) return undefined;
    checkJsonShape(text);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      return undefined;
    }
    return value !== null && typeof value === "object" && !Array.isArray(value) ? (value as JsonObject) : undefined;
  } finally {
    // Held through the parse: the parsed copy is what costs memory.
    held.release();
  }
}
