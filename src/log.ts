import pino, { type DestinationStream, type Logger } from "pino";
import type { LogLevel } from "./config/index.ts";
import { KNOWN_METHODS } from "./http/methods.ts";

export type { Logger };

/**
 * Anything that could hold a secret or a payload. The relay never logs bodies, but a field added
 * by mistake must still come out censored. pino path syntax: `name` is a top-level field,
 * `*.name` that field one level down in any top-level object, `headers["x"]` one header.
 */
export const REDACT_PATHS = [
  "token",
  "*.token",
  "serverToken",
  "*.serverToken",
  "authorization",
  "*.authorization",
  'headers["x-relay-server-token"]',
  'headers["authorization"]',
  'headers["cookie"]',
  "*.chat_history",
  "*.cipherkey",
  "*.iv",
  "*.chunk",
  "*.chunks",
  "chat_history",
  "cipherkey",
  "iv",
  "chunk",
];

export const REDACT_CENSOR = "[redacted]";

interface RedactRules {
  /** Top-level fields censored whatever their value. */
  top: ReadonlySet<string>;
  /** Fields censored inside any top-level object value (`*.name`). */
  nested: readonly string[];
  /** Fields censored inside one named top-level object (`parent["name"]`, `parent.name`). */
  named: ReadonlyMap<string, readonly string[]>;
}

/** The two-level subset of pino's path syntax that REDACT_PATHS uses; anything else is a bug here. */
function compileRedactPaths(paths: readonly string[]): RedactRules {
  const top = new Set<string>();
  const nested: string[] = [];
  const named = new Map<string, string[]>();
  for (const path of paths) {
    const m = /^(\*|[A-Za-z_$][\w$]*)(?:\.([A-Za-z_$][\w$]*)|\["([^"]+)"\])?$/.exec(path);
    if (!m) throw new Error(`log: unsupported redaction path ${path}`);
    const [, first, dotted, quoted] = m;
    const child = dotted ?? quoted;
    if (child === undefined) top.add(first!);
    else if (first === "*") nested.push(child);
    else named.set(first!, [...(named.get(first!) ?? []), child]);
  }
  return { top, nested, named };
}

/**
 * Censors REDACT_PATHS in one record (a log call's object, or a child's bindings), with the output
 * of pino's own `redact` option (test/ops/log-redaction.test.ts compares them line for line). pino
 * runs its redactor as a stringifier on every field of every line, re-parsing each path per call:
 * about half the cost of a request line. This looks at each field once and copies only a record
 * that really holds something to censor, which no line of the relay does on purpose.
 */
export function createRedactor(paths: readonly string[] = REDACT_PATHS, censor = REDACT_CENSOR): (record: Record<string, unknown>) => Record<string, unknown> {
  const { top, nested, named } = compileRedactPaths(paths);
  const hasOwn = Object.prototype.hasOwnProperty;
  /** The censored names present in `value` (own properties of an object, as pino checks them). */
  const present = (value: object, names: readonly string[]): string[] | undefined => {
    let found: string[] | undefined;
    for (const name of names) if (hasOwn.call(value, name)) (found ??= []).push(name);
    return found;
  };
  const censored = (value: object, names: string[]): object => {
    // A copy with the same prototype and descriptors (an Error stays an Error for pino's err
    // serializer); the caller's object is never modified.
    const copy = Object.create(Object.getPrototypeOf(value) as object | null, Object.getOwnPropertyDescriptors(value)) as Record<string, unknown>;
    for (const name of names) {
      const { enumerable } = Object.getOwnPropertyDescriptor(copy, name)!;
      Object.defineProperty(copy, name, { value: censor, writable: true, enumerable, configurable: true });
    }
    return copy;
  };
  return (record) => {
    let out: Record<string, unknown> | undefined;
    for (const key in record) {
      if (!hasOwn.call(record, key)) continue;
      const value = record[key];
      let replacement: unknown = value;
      if (top.has(key)) {
        replacement = censor;
      } else if (value !== null && typeof value === "object" && !Array.isArray(value)) {
        const own = named.get(key);
        const names = present(value, own ? [...own, ...nested] : nested);
        if (names) replacement = censored(value, names);
      }
      if (replacement !== value && value !== undefined) (out ??= { ...record })[key] = replacement;
    }
    return out ?? record;
  };
}

/** pino's level number of "warn": lines from here up are written at once, never batched. */
const WARN_LEVEL = 40;
/** A batch larger than this is written at once instead of at the end of its delay. */
const BATCH_MAX_CHARS = 64 * 1024;
/**
 * Most milliseconds a batched line waits for its write. One write per event-loop turn was still a
 * write(2) per request when requests arrive one at a time (a client or node waiting for each
 * answer): about a fifth of the cost of logging a request line. Short enough that a line is never
 * seen late by anyone reading the log.
 */
export const LOG_BATCH_DELAY_MS = 10;

/**
 * stdout for log lines, written in batches: the lines of up to LOG_BATCH_DELAY_MS go out in one
 * write instead of one write(2) per line, which was the largest single cost of a request under
 * load. Writes stay synchronous (a sync SonicBoom: pino's async mode lost and reordered the last
 * lines before exit under Bun), and nothing waits long: warn, error and fatal lines flush the
 * batch and are written at once, so the lines that explain a crash are out before it; the batch
 * is also written on `flush()` (pino's logger.flush) and at process exit.
 */
export function createBatchedStdout(fd = 1): DestinationStream & { flush(cb?: (err?: Error) => void): void; flushSync(): void } {
  const sonic = pino.destination({ dest: fd, sync: true });
  let pending: string[] = [];
  let chars = 0;
  let scheduled = false;
  const flushSync = () => {
    if (pending.length === 0) return;
    const out = pending.length === 1 ? pending[0]! : pending.join("");
    pending = [];
    chars = 0;
    sonic.write(out);
  };
  const onDelayEnd = () => {
    scheduled = false;
    flushSync();
  };
  process.once("exit", flushSync);
  const stream = {
    // pino sets lastLevel on a destination that asks for metadata (pino/lib/proto.js, write()).
    [Symbol.for("pino.metadata")]: true,
    lastLevel: 0,
    write(line: string) {
      if (stream.lastLevel >= WARN_LEVEL) {
        flushSync();
        sonic.write(line);
        return;
      }
      pending.push(line);
      chars += line.length;
      if (chars >= BATCH_MAX_CHARS) flushSync();
      else if (!scheduled) {
        scheduled = true;
        // Unref'd: a batch never keeps the process alive; exit writes it (process.once above).
        setTimeout(onDelayEnd, LOG_BATCH_DELAY_MS).unref();
      }
    },
    flush(cb?: (err?: Error) => void) {
      flushSync();
      cb?.();
    },
    flushSync,
  };
  return stream;
}

/**
 * pino.stdTimeFunctions.isoTime, formatted once per millisecond: a busy relay writes many lines
 * per millisecond, and toISOString was a visible share of each.
 */
function isoTimeCached(): () => string {
  let lastMs = -1;
  let last = "";
  return () => {
    const now = Date.now();
    if (now !== lastMs) {
      lastMs = now;
      last = `,"time":"${new Date(now).toISOString()}"`;
    }
    return last;
  };
}

/**
 * JSON lines on stdout without transports: pino transports use worker threads that break inside
 * a `bun build --compile` binary (oven-sh/bun#10246). See createBatchedStdout for how they are
 * written.
 */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  const redact = createRedactor();
  const logger = pino(
    {
      level,
      base: { service: "tokenplace-relay" },
      timestamp: isoTimeCached(),
      formatters: { level: (label) => ({ level: label }), log: redact, bindings: redact },
    },
    destination ?? createBatchedStdout(),
  );
  // pino gives children no bindings formatter, so a child's bindings are censored here; children
  // are created from their parent's prototype, so they (and theirs) inherit this method.
  type ChildFn = (this: Logger, bindings: Record<string, unknown>, options?: object) => Logger;
  const child = logger.child as unknown as ChildFn;
  const redactingChild: ChildFn = function (bindings, options) {
    return child.call(this, redact(bindings), options);
  };
  logger.child = redactingChild as unknown as Logger["child"];
  return logger;
}

/**
 * Most distinct method and route strings whose JSON form is kept: the relay's route templates, the
 * proxy's prefixes and "unmatched" are a few dozen; this bounds it whatever a caller passes.
 */
const QUOTED_CACHE_ENTRIES = 256;

export type RequestLine = (level: "info" | "debug", reqId: string, method: string, route: string, status: number, durationMs: number) => void;

/**
 * The request line, `logger[level]({ reqId, method, route, status, durationMs }, "request")`,
 * assembled from the logger's own level prefix, time, bindings and line end and handed to its
 * destination: the same bytes (test/ops/log-redaction.test.ts), without pino's generic per-field
 * loop. One line per request is the relay's busiest log call.
 */
export function createRequestLine(logger: Logger): RequestLine {
  const s = pino.symbols;
  const l = logger as unknown as Record<symbol, unknown>;
  const lsCache = l[s.lsCacheSym] as Record<number, string>;
  const time = l[s.timeSym] as () => string;
  const end = l[s.endSym] as string;
  const messageKey = JSON.stringify(l[s.messageKeySym] as string);
  const stream = l[s.streamSym] as DestinationStream & Record<PropertyKey, unknown>;
  const metadata = stream[s.needsMetadataGsym] === true;
  // Method and route come from small sets (the known methods, the route templates and
  // "unmatched"), so their JSON forms are kept; a method outside the set is a client's choice and
  // is not (the cache would grow with what clients send).
  const quoted = new Map<string, string>();
  const cachedJson = (v: string) => {
    let q = quoted.get(v);
    if (q === undefined) {
      q = JSON.stringify(v);
      if (quoted.size < QUOTED_CACHE_ENTRIES) quoted.set(v, q);
    }
    return q;
  };
  return (level, reqId, method, route, status, durationMs) => {
    if (!logger.isLevelEnabled(level)) return;
    const num = logger.levels.values[level]!;
    const line = `${lsCache[num]}${time()}${l[s.chindingsSym] as string},"reqId":${JSON.stringify(reqId)},"method":${KNOWN_METHODS.has(method) ? cachedJson(method) : JSON.stringify(method)},"route":${cachedJson(route)},"status":${status},"durationMs":${durationMs},${messageKey}:"request"${end}`;
    if (metadata) {
      // What pino tells a destination that asks (pino/lib/proto.js, write()).
      stream.lastLevel = num;
      stream.lastMsg = "request";
      stream.lastLogger = logger;
    }
    stream.write(line);
  };
}

/**
 * Lifecycle events (listening, draining, stopped) are what an operator and the tests look for
 * first, so they are written at any level except "silent", even when requests are logged only
 * from "warn" up.
 */
export function lifecycleLogger(logger: Logger): Logger {
  if (logger.level === "silent" || logger.isLevelEnabled("info")) return logger;
  return logger.child({}, { level: "info" });
}
