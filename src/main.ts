#!/usr/bin/env bun
import { healthcheck } from "./cli/healthcheck.ts";
import { describeConfig, loadConfig, type Env } from "./config/index.ts";
import { createLogger, lifecycleLogger } from "./log.ts";
import { createProxyRoute } from "./proxy/index.ts";
import { startRelay } from "./relay.ts";
import { REVISION, VERSION } from "./version.ts";

const USAGE = `Usage: tokenplace-relay [command]

  (no command)     start the relay (configuration from the environment, see README)
  --check-config   validate the environment, print the effective settings, exit 0 or 2
  healthcheck      GET this relay's /livez (or --url URL), exit 0 on 2xx else 1
  --version        print the version
  --help           this text
`;

/** Exit code for invalid configuration (every problem is listed at once). */
export const EXIT_CONFIG = 2;
/** Exit code when a valid configuration cannot start (the address cannot be bound, the port is taken). */
export const EXIT_START_FAILED = 1;

/**
 * After listening, the relay waits this long, then runs one full collection: past the first
 * requests of a start (a readiness probe, the health probe's answer), before anyone reads it idle.
 */
export const STARTUP_COLLECT_DELAY_MS = 1_000;

async function main(argv: string[], env: Env): Promise<number | undefined> {
  const [cmd, ...rest] = argv;
  if (cmd === "--version" || cmd === "version") {
    console.log(`tokenplace-relay ${VERSION} (${REVISION})`);
    return 0;
  }
  if (cmd === "--help" || cmd === "-h" || cmd === "help") {
    console.log(USAGE);
    return 0;
  }
  if (cmd === "healthcheck") return healthcheck(rest, env);
  if (cmd !== undefined && cmd !== "--check-config" && cmd !== "serve") {
    console.error(`tokenplace-relay: unknown command ${JSON.stringify(cmd)}\n\n${USAGE}`);
    return EXIT_CONFIG;
  }

  const { config, problems, unknown } = loadConfig(env);
  if (problems.length > 0) {
    console.error(`tokenplace-relay: invalid configuration (${problems.length} problem${problems.length === 1 ? "" : "s"}):`);
    for (const p of problems) console.error(`  - ${p}`);
    return EXIT_CONFIG;
  }
  if (cmd === "--check-config") {
    for (const name of unknown) console.error(`warning: ${name} is set but is not a relay setting (typo?)`);
    console.log(JSON.stringify({ ok: true, config: describeConfig(config) }, null, 2));
    return 0;
  }

  const logger = createLogger(config.logLevel);
  for (const name of unknown) logger.warn({ variable: name }, "unknown setting ignored");
  process.on("unhandledRejection", (err) => logger.error({ err }, "unhandled rejection"));
  let relay: ReturnType<typeof startRelay>;
  try {
    relay = startRelay(config, { logger, proxy: createProxyRoute });
  } catch (err) {
    // Bun.serve throws when it cannot listen (EADDRINUSE, EADDRNOTAVAIL, EACCES, a host name that
    // does not resolve): a process that exits 0 here would look like a clean stop to a supervisor.
    const code = (err as { code?: unknown }).code;
    logger.fatal({ host: config.host, port: config.port, code: typeof code === "string" ? code : undefined, err: err instanceof Error ? err.message : String(err) }, "cannot listen");
    await new Promise<void>((resolve) => logger.flush(() => resolve()));
    return EXIT_START_FAILED;
  }
  lifecycleLogger(logger).info({ port: relay.port, host: config.host, version: VERSION, revision: REVISION, config: describeConfig(config) }, "listening");
  // Start-up is over: the compiled binary starts with a reluctant JIT (scripts/build.ts,
  // STARTUP_JIT_POLICY) so run-once start-up code is not optimized; requests get the normal one.
  Bun.unsafe.setJITPolicy(1);
  // What start-up allocated and dropped (module initialisation, the configuration, the first
  // lines) is handed back once: ~3 ms, ~0.8 MiB less RSS for an idle relay.
  setTimeout(() => {
    Bun.gc(true);
    Bun.shrink();
  }, STARTUP_COLLECT_DELAY_MS).unref();

  // The destination writes asynchronously: flush it, or the last lines ("stopped") are lost.
  const exitAfterFlush = (code: number) => logger.flush(() => process.exit(code));
  let signals = 0;
  const onSignal = (signal: string) => {
    if (++signals > 1) {
      logger.warn({ signal }, "second signal, exiting now");
      process.exit(1);
    }
    relay.shutdown(signal).then(
      () => exitAfterFlush(0),
      (err) => {
        logger.error({ err }, "shutdown failed");
        exitAfterFlush(1);
      },
    );
  };
  process.on("SIGTERM", () => onSignal("SIGTERM"));
  process.on("SIGINT", () => onSignal("SIGINT"));
  return undefined;
}

// No top-level await: the binary is compiled to bytecode (scripts/build.ts), which needs a
// module without it.
void main(process.argv.slice(2), process.env).then(
  (code) => {
    if (code !== undefined) process.exit(code);
  },
  (err: unknown) => {
    console.error("tokenplace-relay: failed to start:", err);
    process.exit(EXIT_START_FAILED);
  },
);
