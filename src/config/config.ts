import * as D from "./defaults.ts";
import { RELAY_ROUTES, RESERVED_PREFIXES } from "../routes.ts";
import { loadApiV1Config, type ApiV1Config } from "./api-v1.ts";
import { loadBoundsConfig, type BoundsConfig } from "./bounds.ts";
import { loadStateConfig, type StateConfig } from "./state.ts";
import { CONTROL_PLANE_ROUTE_VARS, describeLimits, loadLimitsConfig, type LimitsConfig } from "./limits.ts";
import { loadMemoryBudget, type MemoryBudget } from "./memory.ts";
import { describeOperatorConfig, loadOperatorConfig, type OperatorConfig } from "./operator.ts";
import { loadWebConfig, type WebConfig } from "./web.ts";
import { redactRedisUrl } from "../state/redis.ts";
import { EnvReader, parseHttpUrl, type Env } from "./env-reader.ts";
import { checkSettingNames } from "./names.ts";
import { isIP } from "node:net";

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface BrokerLimits {
  longPollMs: number;
  nextPingSeconds: number;
  maxLongPolls: number;
  maxQueueDepth: number;
  maxBatchSize: number;
  maxNodes: number;
  maxAnswers: number;
  maxStreamSessions: number;
  maxStreamChunks: number;
  nodeStaleMs: number;
  jobTtlMs: number;
  answerTtlMs: number;
  streamTtlMs: number;
  sweepIntervalMs: number;
  /** Payload bytes (jobs, answers, stream chunks) the legacy stores may hold: its share of the memory budget. */
  maxStoredBytes: number;
}

export interface ProxyConfig {
  /** Path prefixes forwarded to the upstream, each starting and ending with "/". */
  prefixes: string[];
  /** First is the primary; more than one enables round robin with passive ejection. */
  upstreams: URL[];
  requireUpstreamHealth: boolean;
  healthPath: string;
  healthIntervalMs: number;
  firstByteTimeoutMs: number;
  idleTimeoutMs: number;
  ejectMs: number;
  /** Keep inbound X-Forwarded-* / Forwarded (a trusted ingress sits in front) instead of replacing them. */
  trustForwarded: boolean;
}

export interface Config {
  host: string;
  port: number;
  logLevel: LogLevel;
  /** Broker only: no proxy routes, readiness ignores the GPU host. */
  relayOnly: boolean;
  /** The primary upstream after TOKENPLACE_GPU_HOST/PORT were applied. */
  upstreamUrl: URL;
  /** The host readiness resolves. */
  gpuHost: string;
  gpuPort: number;
  /** Accepted registration tokens; empty means registration is open. */
  serverTokens: string[];
  maxBodyBytes: number;
  idleTimeoutSeconds: number;
  shutdownDelayMs: number;
  shutdownGraceMs: number;
  dnsCacheMs: number;
  broker: BrokerLimits;
  v1: ApiV1Config;
  /** The relay's memory ceiling (RELAY_MEMORY_BUDGET_BYTES), its shares and the memory guard's levels (src/config/memory.ts). */
  memory: MemoryBudget;
  /** Where relay state lives: this process, or a shared Valkey/Redis. */
  state: StateConfig;
  proxy: ProxyConfig;
  /** Request bounds: connections, body bytes and time, holds and uploads per address, URL/header sizes (src/config/bounds.ts). */
  bounds: BoundsConfig;
  /** Rate limits, and the trusted proxies that may name the client (src/config/limits.ts). */
  limits: LimitsConfig;
  /** The private operator endpoints /metrics and /relay/diagnostics (src/config/operator.ts). */
  operator: OperatorConfig;
  /** The browser chat page (src/config/web.ts). */
  web: WebConfig;
}

export interface ConfigResult {
  config: Config;
  problems: string[];
  /**
   * Set variables that look like ours but are not settings and are only warned about (service
   * links, src/config/names.ts); every other such name is in `problems`.
   */
  unknown: string[];
  known: Set<string>;
}

/**
 * Settings only the GPU proxy reads. RELAY_PROXY_TRUST_FORWARDED is not one: rate limits also
 * read it, to name the client behind a trusted proxy.
 */
export const PROXY_ONLY_SETTINGS = [
  "TOKENPLACE_RELAY_UPSTREAM_URL",
  "TOKENPLACE_GPU_HOST",
  "TOKENPLACE_GPU_PORT",
  "TOKEN_PLACE_RELAY_UPSTREAMS",
  "TOKENPLACE_RELAY_REQUIRE_UPSTREAM_HEALTH",
  "RELAY_PROXY_PREFIXES",
  "RELAY_PROXY_MAX_UPLOADS_PER_IP",
  "RELAY_UPSTREAM_HEALTH_PATH",
  "RELAY_UPSTREAM_HEALTH_INTERVAL_MS",
  "RELAY_UPSTREAM_FIRST_BYTE_TIMEOUT_MS",
  "RELAY_UPSTREAM_IDLE_TIMEOUT_MS",
  "RELAY_UPSTREAM_EJECT_MS",
] as const;

/**
 * What Bun.serve can listen on: an IP literal (IPv4, or IPv6 without brackets) or an RFC 1123 §2.1
 * host name (letters, digits and inner hyphens, labels of at most 63, at most 253 in all). Anything
 * else passed --check-config and then failed at listen.
 */
export function isListenHost(host: string): boolean {
  if (isIP(host) !== 0) return true;
  const name = host.endsWith(".") ? host.slice(0, -1) : host;
  if (name.length === 0 || name.length > 253) return false;
  const labels = name.split(".");
  // All-numeric labels would be a malformed IPv4 address (999.1.1.1), not a name.
  if (labels.every((l) => /^\d+$/.test(l))) return false;
  return labels.every((l) => /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(l));
}

export function loadConfig(env: Env): ConfigResult {
  const r = new EnvReader(env);

  const host = r.string("RELAY_HOST", D.DEFAULT_HOST);
  if (!isListenHost(host)) {
    r.problem(`RELAY_HOST: not an IP address or host name to listen on: ${JSON.stringify(host)} (e.g. 0.0.0.0, ::, 127.0.0.1 or localhost)`);
  }
  const port = r.int("RELAY_PORT", D.DEFAULT_PORT, { min: 0, max: 65535 });
  const logLevel = r.oneOf("LOG_LEVEL", LOG_LEVELS, D.DEFAULT_LOG_LEVEL);
  const relayOnly = r.bool("TOKENPLACE_RELAY_ONLY", false);

  // Explicit host/port win over the URL's so the chart can point at the GPU box without
  // re-assembling the URL (and readiness checks the host that is actually used).
  const upstreamUrl = r.url("TOKENPLACE_RELAY_UPSTREAM_URL", D.DEFAULT_UPSTREAM_URL);
  const gpuHostOverride = r.raw("TOKENPLACE_GPU_HOST");
  if (gpuHostOverride !== undefined) {
    // The URL hostname setter silently ignores what it cannot parse: check that it took.
    const wanted = gpuHostOverride.includes(":") && !gpuHostOverride.startsWith("[") ? `[${gpuHostOverride}]` : gpuHostOverride;
    const before = upstreamUrl.hostname;
    if (!/[\s/@?#]/.test(wanted)) upstreamUrl.hostname = wanted;
    if (upstreamUrl.hostname !== wanted.toLowerCase()) {
      upstreamUrl.hostname = before;
      r.problem(`TOKENPLACE_GPU_HOST: not a host name or IP address: ${JSON.stringify(gpuHostOverride)}`);
    }
  }
  if (r.raw("TOKENPLACE_GPU_PORT") !== undefined) {
    upstreamUrl.port = String(r.int("TOKENPLACE_GPU_PORT", D.DEFAULT_GPU_PORT, { min: 1, max: 65535 }));
  }
  const gpuHost = upstreamUrl.hostname.replace(/^\[|\]$/g, "");
  const gpuPort = Number(upstreamUrl.port || (upstreamUrl.protocol === "https:" ? 443 : 80));

  // An empty secret (e.g. a Secret key with no value) must not quietly open registration.
  for (const name of ["TOKEN_PLACE_RELAY_SERVER_TOKEN", "TOKEN_PLACE_RELAY_SERVER_TOKENS"]) {
    if (r.isBlank(name)) r.problem(`${name}: set but empty; unset it to run with open registration`);
  }
  const single = r.raw("TOKEN_PLACE_RELAY_SERVER_TOKEN");
  const rotation = r.list("TOKEN_PLACE_RELAY_SERVER_TOKENS");
  if (r.raw("TOKEN_PLACE_RELAY_SERVER_TOKENS") !== undefined && rotation.length === 0) {
    r.problem("TOKEN_PLACE_RELAY_SERVER_TOKENS: lists no token");
  }
  const serverTokens = [...new Set([...(single ? [single] : []), ...rotation])];
  for (const t of serverTokens) {
    if (t.length < 16) r.problem("TOKEN_PLACE_RELAY_SERVER_TOKEN(S): every token must be at least 16 characters");
  }

  const longPollMs = r.int("RELAY_LONG_POLL_MS", D.DEFAULT_LONG_POLL_MS, { min: 0, max: D.MAX_LONG_POLL_MS });
  if (longPollMs > 0 && longPollMs < D.MIN_LONG_POLL_MS) {
    r.problem(`RELAY_LONG_POLL_MS: must be 0 (off) or at least ${D.MIN_LONG_POLL_MS}, got ${longPollMs}`);
  }
  const broker: BrokerLimits = {
    longPollMs,
    // 0 would have every node that was not held re-poll in a tight loop.
    nextPingSeconds: r.int("RELAY_NEXT_PING_SECONDS", D.DEFAULT_NEXT_PING_SECONDS, { min: 1, max: 3600 }),
    maxLongPolls: r.int("RELAY_MAX_LONG_POLLS", D.DEFAULT_MAX_LONG_POLLS, { min: 0 }),
    maxQueueDepth: r.int("RELAY_MAX_QUEUE_DEPTH", D.DEFAULT_MAX_QUEUE_DEPTH, { min: 1 }),
    maxBatchSize: r.int("RELAY_MAX_BATCH_SIZE", D.DEFAULT_MAX_BATCH_SIZE, { min: 1 }),
    maxNodes: r.int("RELAY_MAX_NODES", D.DEFAULT_MAX_NODES, { min: 1 }),
    maxAnswers: r.int("RELAY_MAX_ANSWERS", D.DEFAULT_MAX_ANSWERS, { min: 1 }),
    maxStreamSessions: r.int("RELAY_MAX_STREAM_SESSIONS", D.DEFAULT_MAX_STREAM_SESSIONS, { min: 1 }),
    maxStreamChunks: r.int("RELAY_MAX_STREAM_CHUNKS", D.DEFAULT_MAX_STREAM_CHUNKS, { min: 1 }),
    nodeStaleMs: r.int("RELAY_NODE_STALE_MS", D.DEFAULT_NODE_STALE_MS, { min: 1_000 }),
    jobTtlMs: r.int("RELAY_JOB_TTL_MS", D.DEFAULT_JOB_TTL_MS, { min: 1_000 }),
    answerTtlMs: r.int("RELAY_ANSWER_TTL_MS", D.DEFAULT_ANSWER_TTL_MS, { min: 1_000 }),
    streamTtlMs: r.int("RELAY_STREAM_TTL_MS", D.DEFAULT_STREAM_TTL_MS, { min: 1_000 }),
    sweepIntervalMs: r.int("RELAY_SWEEP_INTERVAL_MS", D.DEFAULT_SWEEP_INTERVAL_MS, { min: 100, max: 60_000 }),
    maxStoredBytes: 0, // set from the memory budget below
  };
  if (broker.longPollMs >= broker.nodeStaleMs) {
    r.problem("RELAY_LONG_POLL_MS must be shorter than RELAY_NODE_STALE_MS (a held node would look stale)");
  }
  if (broker.nextPingSeconds * 1000 >= broker.nodeStaleMs) {
    r.problem("RELAY_NEXT_PING_SECONDS must be shorter than RELAY_NODE_STALE_MS (a node sleeping that long would look stale)");
  }
  if (broker.maxBatchSize > broker.maxQueueDepth) {
    r.problem("RELAY_MAX_BATCH_SIZE must not exceed RELAY_MAX_QUEUE_DEPTH");
  }

  const maxBodyBytes = r.int("RELAY_MAX_BODY_BYTES", D.DEFAULT_MAX_BODY_BYTES, { min: 1_024, max: 256 * 1024 * 1024 });
  const idleTimeoutSeconds = r.int("RELAY_IDLE_TIMEOUT_SECONDS", D.DEFAULT_IDLE_TIMEOUT_SECONDS, { min: 1, max: 255 });
  const shutdownDelayMs = r.int("RELAY_SHUTDOWN_DELAY_MS", D.DEFAULT_SHUTDOWN_DELAY_MS, { min: 0, max: 300_000 });
  const shutdownGraceMs = r.int("RELAY_SHUTDOWN_GRACE_MS", D.DEFAULT_SHUTDOWN_GRACE_MS, { min: 0, max: 600_000 });
  const dnsCacheMs = r.int("RELAY_DNS_CACHE_MS", D.DEFAULT_DNS_CACHE_MS, { min: 0, max: 600_000 });
  if (idleTimeoutSeconds * 1000 <= longPollMs) {
    r.problem("RELAY_IDLE_TIMEOUT_SECONDS must be longer than RELAY_LONG_POLL_MS");
  }

  const state = loadStateConfig(r);
  const memory = loadMemoryBudget(r);
  const bounds = loadBoundsConfig(r, maxBodyBytes, memory);
  // Stored payloads get their share of the memory budget; an explicit RELAY_V1_MAX_STORED_BYTES is checked against the whole.
  const v1 = loadApiV1Config(r, memory.bytes, memory.shares.storedBytes);
  // The legacy protocol's part of the stored-payload share (unused while its routes are off).
  broker.maxStoredBytes = Math.floor(memory.shares.storedBytes * D.LEGACY_MEMORY_BUDGET_SHARE);
  const proxy = loadProxyConfig(r, upstreamUrl);
  const limits = loadLimitsConfig(r, { trustForwarded: proxy.trustForwarded });
  // With a list, the list is what is proxied to; a primary URL outside it would be ignored.
  const primarySet = ["TOKENPLACE_RELAY_UPSTREAM_URL", "TOKENPLACE_GPU_HOST", "TOKENPLACE_GPU_PORT"].some((n) => r.raw(n) !== undefined);
  if (r.raw("TOKEN_PLACE_RELAY_UPSTREAMS") !== undefined && primarySet && !proxy.upstreams.some((u) => u.href === upstreamUrl.href)) {
    r.problem(`TOKEN_PLACE_RELAY_UPSTREAMS does not contain the primary upstream ${upstreamUrl.href} (TOKENPLACE_RELAY_UPSTREAM_URL/GPU_HOST/GPU_PORT); list it or unset those`);
  }

  if (relayOnly) {
    // Nothing is proxied: a proxy setting beside TOKENPLACE_RELAY_ONLY=true does nothing, and the
    // operator who set it expects a proxy (the chart leaves them out in relay-only mode).
    for (const name of PROXY_ONLY_SETTINGS) {
      if (r.raw(name) !== undefined) r.problem(`${name} is set but TOKENPLACE_RELAY_ONLY is true, so nothing is proxied; unset one of them`);
    }
  }

  const operator = loadOperatorConfig(r, { serverTokens, operatorTokens: v1.operatorTokens });

  const web = loadWebConfig(r);
  // Last: every setting has been read, so r.names is the whole set of names the relay knows.
  const known = r.names;
  const names = checkSettingNames(env, known, Object.values(CONTROL_PLANE_ROUTE_VARS));
  for (const p of names.problems) r.problem(p);
  const unknown = names.warnings;

  return {
    config: {
      host, port, logLevel, relayOnly, upstreamUrl, gpuHost, gpuPort, serverTokens,
      maxBodyBytes, idleTimeoutSeconds, shutdownDelayMs, shutdownGraceMs, dnsCacheMs, broker, v1, memory, state, proxy,
      operator, limits, bounds,
      web,
    },
    problems: r.problems,
    unknown,
    known,
  };
}

function loadProxyConfig(r: EnvReader, primary: URL): ProxyConfig {
  const prefixes = r.entries("RELAY_PROXY_PREFIXES", ["/api/", "/v1/"]);
  for (const p of prefixes) {
    const segments = p.split("/").slice(1, -1);
    const wellFormed = /^\/[A-Za-z0-9._~-]+(\/[A-Za-z0-9._~-]+)*\/$/.test(p) && !segments.some((s) => /^\.+$/.test(s));
    if (!wellFormed) {
      r.problem(`RELAY_PROXY_PREFIXES: ${JSON.stringify(p)} must look like /name/ (leading and trailing slash, no dot segments)`);
    }
    // The relay's own routes win over every prefix; a prefix that only covers them proxies nothing.
    if (RELAY_ROUTES.includes(p.slice(0, -1)) || RESERVED_PREFIXES.some((reserved) => p.startsWith(reserved))) {
      r.problem(`RELAY_PROXY_PREFIXES: ${JSON.stringify(p)} lies inside the relay's own routes, so nothing would be proxied`);
    }
  }
  // Two spellings of one URL (http://A:1 and http://a:1/) are one upstream listed twice: round
  // robin would send it twice the share, and passive ejection would count it twice.
  const sameUpstream = (u: string) => URL.canParse(u) ? new URL(u).href : u;
  const listed = r.entries("TOKEN_PLACE_RELAY_UPSTREAMS", [], sameUpstream);
  const upstreams: URL[] = [];
  for (const u of listed) {
    const parsed = parseHttpUrl(u, "TOKEN_PLACE_RELAY_UPSTREAMS", (m) => r.problem(m));
    if (parsed) upstreams.push(parsed);
  }
  if (upstreams.length === 0) upstreams.push(primary);

  const healthPath = r.string("RELAY_UPSTREAM_HEALTH_PATH", "/health");
  if (!healthPath.startsWith("/")) r.problem("RELAY_UPSTREAM_HEALTH_PATH: must start with /");

  return {
    prefixes,
    upstreams,
    requireUpstreamHealth: r.bool("TOKENPLACE_RELAY_REQUIRE_UPSTREAM_HEALTH", false),
    healthPath,
    healthIntervalMs: r.int("RELAY_UPSTREAM_HEALTH_INTERVAL_MS", 10_000, { min: 500, max: 600_000 }),
    firstByteTimeoutMs: r.int("RELAY_UPSTREAM_FIRST_BYTE_TIMEOUT_MS", 60_000, { min: 100, max: 3_600_000 }),
    idleTimeoutMs: r.int("RELAY_UPSTREAM_IDLE_TIMEOUT_MS", 300_000, { min: 1_000, max: 86_400_000 }),
    ejectMs: r.int("RELAY_UPSTREAM_EJECT_MS", 30_000, { min: 0, max: 3_600_000 }),
    trustForwarded: r.bool("RELAY_PROXY_TRUST_FORWARDED", false),
  };
}

/** A printable view with secrets replaced, for --check-config and the start-up log line. */
export function describeConfig(c: Config): Record<string, unknown> {
  return {
    host: c.host,
    port: c.port,
    logLevel: c.logLevel,
    relayOnly: c.relayOnly,
    upstream: c.upstreamUrl.href,
    gpuHost: c.gpuHost,
    gpuPort: c.gpuPort,
    serverTokens: c.serverTokens.length === 0 ? "none (registration open)" : `${c.serverTokens.length} configured (redacted)`,
    maxBodyBytes: c.maxBodyBytes,
    idleTimeoutSeconds: c.idleTimeoutSeconds,
    shutdownDelayMs: c.shutdownDelayMs,
    shutdownGraceMs: c.shutdownGraceMs,
    broker: c.broker,
    memory: c.memory,
    v1: { ...c.v1, operatorTokens: c.v1.operatorTokens.length === 0 ? "none (operator unregister off)" : `${c.v1.operatorTokens.length} configured (redacted)` },
    state: c.state.backend === "memory" ? c.state : { ...c.state, redis: { ...c.state.redis!, url: redactRedisUrl(c.state.redis!.url) } },
    proxy: { ...c.proxy, upstreams: c.proxy.upstreams.map((u) => u.href) },
    operator: describeOperatorConfig(c.operator),
    web: c.web,
    limits: describeLimits(c.limits),
    bounds: c.bounds,
  };
}
