import pino, { type DestinationStream, type Logger } from "pino";
import type { LogLevel } from "./config/index.ts";

export type { Logger };

/**
 * Anything that could hold a secret or a payload. The relay never logs bodies, but a field added
 * by mistake must still come out censored.
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

/**
 * JSON lines on stdout without transports: pino transports use worker threads that break inside
 * a `bun build --compile` binary (oven-sh/bun#10246). Writes are synchronous (pino's own default):
 * the async mode of its destination lost and reordered the last lines before exit under Bun, and
 * a crash must not swallow the lines that explain it.
 */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: "tokenplace-relay" },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT_PATHS, censor: "[redacted]" },
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ dest: 1, sync: true }),
  );
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
