import { describe, expect, test } from "bun:test";
import pino, { type DestinationStream } from "pino";
import { LOG_BATCH_DELAY_MS, REDACT_CENSOR, REDACT_PATHS, createBatchedStdout, createLogger, createRedactor, createRequestLine } from "../../src/log.ts";

/**
 * The relay censors REDACT_PATHS itself (src/log.ts) instead of through pino's `redact` option,
 * which re-parses every path for every field of every line. These tests hold the two to the same
 * output: the same records, logged through both, give the same lines byte for byte.
 */

function capture(): { stream: DestinationStream; lines: string[] } {
  const lines: string[] = [];
  return { lines, stream: { write: (s: string) => void lines.push(s) } };
}

/** The relay's logger as it was configured before: pino's own redaction. */
function pinoRedacting(stream: DestinationStream) {
  return pino(
    {
      level: "debug",
      base: { service: "tokenplace-relay" },
      timestamp: false,
      redact: { paths: REDACT_PATHS, censor: REDACT_CENSOR },
      formatters: { level: (label) => ({ level: label }) },
    },
    stream,
  );
}

class TokenError extends Error {
  token = "error-token-secret";
  code = "E_TEST";
}

const records: Array<Record<string, unknown>> = [
  { method: "POST", route: "/faucet", status: 200, durationMs: 1.2 },
  { token: "t0k3n" },
  { serverToken: "st", authorization: "Bearer x", chat_history: "ch", cipherkey: "ck", iv: "iv", chunk: "c", chunks: ["stays: top-level chunks is not a path"] },
  { token: undefined, iv: null, chunk: 0, cipherkey: false },
  { headers: { "x-relay-server-token": "hdr", authorization: "a", cookie: "c", accept: "*/*", token: "nested-too" } },
  { headers: { accept: "*/*" } },
  { body: { chat_history: "PLAINTEXT-MARKER", iv: "iv1", keep: 1, nested: { token: "two levels down is not a path" } } },
  { body: { token: undefined, chunks: [1, 2] }, other: { serverToken: "x" } },
  { list: [{ token: "arrays are not walked" }], n: 3, s: 'quote " and \\ backslash', u: "\u2028 line sep" },
  { err: new TokenError("with a token field") },
  { err: new Error("plain error") },
  { date: new Date(0), nothing: null },
  { upstream: "http://gpu:3000", kind: "reset", failOver: false },
];

const strip = (line: string) => line.replace(/,"time":"[^"]*"/, "");

describe("log redaction", () => {
  test("the relay's redactor writes exactly what pino's redact option wrote", () => {
    const before = capture();
    const after = capture();
    const reference = pinoRedacting(before.stream);
    const relay = createLogger("debug", after.stream);
    for (const record of records) {
      reference.info(record, "line");
      relay.info(record, "line");
      reference.child({ reqId: "r-1", token: "bound", headers: { cookie: "c" } }).warn(record, "child");
      relay.child({ reqId: "r-1", token: "bound", headers: { cookie: "c" } }).warn(record, "child");
    }
    expect(after.lines.length).toBe(records.length * 2);
    expect(after.lines.map(strip)).toEqual(before.lines.map(strip));
    // And the censoring is real (the reference could be wrong too).
    const all = after.lines.join("");
    for (const secret of ["t0k3n", "hdr", "PLAINTEXT-MARKER", "iv1", "error-token-secret", "bound", "Bearer x"]) expect(all).not.toContain(secret);
    expect(all).toContain("two levels down is not a path");
  });

  test("records with nothing to censor are passed through, not copied; censored ones are copies", () => {
    const redact = createRedactor();
    const clean = { method: "GET", route: "/livez", status: 200 };
    expect(redact(clean)).toBe(clean);
    const dirty = { body: { iv: "x", keep: 1 } };
    const out = redact(dirty) as { body: { iv: string; keep: number } };
    expect(out).not.toBe(dirty);
    expect(out.body).toEqual({ iv: REDACT_CENSOR, keep: 1 });
    expect(dirty.body.iv).toBe("x");
  });

  test("an unsupported path is refused when the logger is built, never ignored", () => {
    expect(() => createRedactor(["a.b.c"])).toThrow(/unsupported redaction path/);
  });

  test("the request line written directly equals pino's line for the same fields, at both levels and only when enabled", () => {
    const viaPino = capture();
    const direct = capture();
    const pinoLogger = createLogger("debug", viaPino.stream);
    const line = createRequestLine(createLogger("debug", direct.stream));
    const cases: Array<[string, string, string, number, number]> = [
      ["0b6f1c1e-8a4e-4f0e-9a55-5f7f6f8f9f00", "POST", "/api/v1/relay/requests", 200, 1.2],
      ["client-id:7@edge", "GET", "/livez", 503, 0],
      ["r", "BR\"EW", "unmatched", 405, 1234.5],
      ["r2", "GET", "/api/*", 200, 0.1],
    ];
    for (const [reqId, method, route, status, durationMs] of cases) {
      for (const level of ["info", "debug"] as const) {
        pinoLogger[level]({ reqId, method, route, status, durationMs }, "request");
        line(level, reqId, method, route, status, durationMs);
      }
    }
    expect(direct.lines.length).toBe(cases.length * 2);
    expect(direct.lines.map(strip)).toEqual(viaPino.lines.map(strip));
    const quiet = capture();
    createRequestLine(createLogger("info", quiet.stream))("debug", "r", "GET", "/livez", 200, 0.1);
    expect(quiet.lines).toEqual([]);
  });

  test("stdout batching: lines go out together within LOG_BATCH_DELAY_MS, warn and up at once and in order", async () => {
    const { mkdtempSync, openSync, readFileSync, closeSync } = await import("node:fs");
    const { join } = await import("node:path");
    const { tmpdir } = await import("node:os");
    const file = join(mkdtempSync(join(tmpdir(), "relay-log-")), "out.log");
    const fd = openSync(file, "w");
    try {
      const logger = createLogger("info", createBatchedStdout(fd));
      logger.info("one");
      logger.info("two");
      expect(readFileSync(file, "utf8")).toBe("");
      logger.warn("three");
      const msgs = () => readFileSync(file, "utf8").trim().split("\n").map((l) => (JSON.parse(l) as { msg: string }).msg);
      expect(msgs()).toEqual(["one", "two", "three"]);
      logger.info("four");
      await new Promise((r) => setImmediate(r));
      logger.info("four and a half");
      await Bun.sleep(LOG_BATCH_DELAY_MS + 20);
      expect(msgs()).toEqual(["one", "two", "three", "four", "four and a half"]);
      logger.info("five");
      await new Promise<void>((r) => logger.flush(() => r()));
      expect(msgs()).toEqual(["one", "two", "three", "four", "four and a half", "five"]);
    } finally {
      closeSync(fd);
    }
  });

  test("batched lines are written when the process exits right after logging them", async () => {
    const script = `import { createLogger } from ${JSON.stringify(new URL("../../src/log.ts", import.meta.url).pathname)}; const l = createLogger("info"); l.info("last words"); process.exit(3);`;
    const proc = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "pipe" });
    const out = await new Response(proc.stdout).text();
    expect(await proc.exited).toBe(3);
    expect(out).toContain('"msg":"last words"');
  });

  test("a request line through the app's parent logger equals the one through a per-request child", () => {
    const viaChild = capture();
    const viaParent = capture();
    const line = { method: "POST", route: "/sink", status: 200, durationMs: 0.4 };
    createLogger("info", viaChild.stream).child({ reqId: "abc" }).info(line, "request");
    createLogger("info", viaParent.stream).info({ reqId: "abc", ...line }, "request");
    expect(viaParent.lines.map(strip)).toEqual(viaChild.lines.map(strip));
  });
});
