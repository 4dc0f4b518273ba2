import { Writable } from "node:stream";
import type pino from "pino";
import { ManualClock, type Clock } from "../../src/clock.ts";
import { loadConfig, type Config } from "../../src/config/index.ts";
import { createLogger } from "../../src/log.ts";
import { startRelay, type Relay, type RelayOverrides } from "../../src/relay.ts";

/** Captures pino's JSON lines so tests can assert what was (and was not) logged. */
export function captureLogger(level: pino.Level = "debug") {
  const lines: Record<string, unknown>[] = [];
  const raw: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split("\n")) {
        if (!line) continue;
        raw.push(line);
        lines.push(JSON.parse(line));
      }
      cb();
    },
  });
  // The production logger (with its redaction), writing into memory.
  const logger = createLogger(level, stream);
  return { logger, lines, raw };
}

export function testConfig(env: Record<string, string> = {}): Config {
  // The memory guard off: an in-process relay would watch the test runner's RSS, which every suite
  // in the process shares (test/limits/rss.test.ts checks the guard on the compiled binary).
  const { config, problems } = loadConfig({ RELAY_PORT: "0", RELAY_HOST: "127.0.0.1", TOKENPLACE_RELAY_ONLY: "true", RELAY_MEMORY_GUARD: "false", ...env });
  if (problems.length > 0) throw new Error(`test config invalid: ${problems.join("; ")}`);
  return config;
}

export interface TestRelay extends Relay {
  clock: Clock;
  post(path: string, body: unknown, headers?: Record<string, string>): Promise<Response>;
  get(path: string): Promise<Response>;
}

/** An in-process relay on an ephemeral port, talked to over real HTTP. */
export function startTestRelay(env: Record<string, string> = {}, overrides: RelayOverrides = {}): TestRelay {
  const relay = startRelay(testConfig(env), {
    processMetrics: false,
    logger: overrides.logger ?? captureLogger("warn").logger,
    resolveHost: async () => true,
    ...overrides,
  });
  const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(relay.url + path, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...headers },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });
  const get = (path: string) => fetch(relay.url + path);
  return Object.assign(relay, { clock: overrides.clock ?? new ManualClock(), post, get });
}

/** The legacy /sink protocol is off by default, as upstream; its suites turn it on. */
export const LEGACY_ON = { TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES: "true" } as const;

export function startLegacyRelay(env: Record<string, string> = {}, overrides: RelayOverrides = {}): TestRelay {
  return startTestRelay({ ...LEGACY_ON, ...env }, overrides);
}

/** A distinct opaque "public key" per call, shaped like the real ones (base64 of a PEM). */
let keySeq = 0;
export function fakeKey(label = "k"): string {
  return btoa(`-----BEGIN PUBLIC KEY-----\n${label}-${++keySeq}-${crypto.randomUUID()}\n-----END PUBLIC KEY-----\n`);
}

export const job = (server_public_key: string, extra: Record<string, unknown> = {}) => ({
  server_public_key,
  chat_history: "Y2lwaGVydGV4dA==",
  cipherkey: "a2V5",
  iv: "aXY=",
  ...extra,
});
