import * as D from "./defaults.ts";
import type { EnvReader } from "./env-reader.ts";

/** Settings of the API v1 E2EE relay protocol; names and defaults are upstream relay.py's (spec §4). */
export interface ApiV1Config {
  leaseSeconds: number;
  pollWaitSeconds: number;
  inFlightTtlSeconds: number;
  requestDeadlineSeconds: number;
  tombstoneTtlSeconds: number;
  terminalTtlSeconds: number;
  pendingTtlSeconds: number;
  maxQueueDepthPerNode: number;
  retrieveHoldMs: number;
  maxRequests: number;
  maxStoredBytes: number;
  /** Bytes of live requests one client address may hold (RELAY_V1_MAX_STORED_BYTES_PER_CLIENT). */
  maxStoredBytesPerClient: number;
  /** Operator tokens for POST /api/v1/relay/unregister; empty = the route answers 503. */
  operatorTokens: string[];
  /** Serve the legacy /sink protocol (upstream: off, answering 410). */
  legacyRoutes: boolean;
}

/**
 * By default one client address may hold 1/4 of RELAY_V1_MAX_STORED_BYTES in requests that have
 * not left yet (queued or in flight), the share the legacy protocol gives one node key
 * (src/broker/bytes.ts): an address flooding requests leaves three quarters for everyone else.
 * Many users behind one NAT share one address, so operators serving such sites raise it.
 */
export const DEFAULT_V1_CLIENT_SHARE_DIVISOR = 4;
/** Below this a per-address share could not hold one large real request (long chat histories). */
export const MIN_V1_STORED_BYTES_PER_CLIENT = 64 * 1024;

export const OPERATOR_TOKEN_VARS = ["TOKEN_PLACE_OPERATOR_TOKEN", "TOKEN_PLACE_KEY_ROTATION_TOKEN", "PUBLIC_KEY_ROTATION_TOKEN"] as const;

/**
 * Upstream falls back to defaults (or clamps) on junk; here every bad value is a problem listed at
 * start, so a typo never runs a relay with timings nobody chose.
 */
export function loadApiV1Config(r: EnvReader, memoryBudgetBytes: number = D.DEFAULT_MEMORY_BUDGET_BYTES, storedShareBytes: number = memoryBudgetBytes): ApiV1Config {
  const legacyRoutes = r.bool("TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES", false);
  // The stored-payload share is API v1's alone unless the legacy protocol runs beside it.
  const budgetShare = Math.floor(storedShareBytes * (legacyRoutes ? 1 - D.LEGACY_MEMORY_BUDGET_SHARE : 1));
  const maxStoredBytes = r.int("RELAY_V1_MAX_STORED_BYTES", budgetShare, { min: 1024 * 1024, max: 64 * 1024 ** 3 });
  if (maxStoredBytes > memoryBudgetBytes) {
    r.problem(`RELAY_V1_MAX_STORED_BYTES: ${maxStoredBytes} exceeds the memory budget (${memoryBudgetBytes}, RELAY_MEMORY_BUDGET_BYTES)`);
  }
  const maxStoredBytesPerClient = r.int("RELAY_V1_MAX_STORED_BYTES_PER_CLIENT", Math.floor(maxStoredBytes / DEFAULT_V1_CLIENT_SHARE_DIVISOR), {
    min: MIN_V1_STORED_BYTES_PER_CLIENT,
    max: 64 * 1024 ** 3,
  });
  if (maxStoredBytesPerClient > maxStoredBytes) {
    r.problem(`RELAY_V1_MAX_STORED_BYTES_PER_CLIENT: ${maxStoredBytesPerClient} exceeds RELAY_V1_MAX_STORED_BYTES (${maxStoredBytes})`);
  }
  const leaseSeconds = r.int("TOKEN_PLACE_API_V1_RELAY_SERVER_LEASE_SECONDS", D.DEFAULT_V1_LEASE_SECONDS, { min: 1, max: 3_600 });
  const pollWaitSeconds = r.number("TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS", D.DEFAULT_V1_POLL_WAIT_SECONDS, {
    min: 0,
    max: D.MAX_V1_POLL_WAIT_SECONDS,
  });
  const inFlightTtlSeconds = r.number("TOKEN_PLACE_API_V1_IN_FLIGHT_TTL_SECONDS", leaseSeconds, { min: 1, max: 3_600 });
  const min = r.number("TOKEN_PLACE_API_V1_REQUEST_DEADLINE_MIN_SECONDS", D.DEFAULT_V1_REQUEST_DEADLINE_MIN_SECONDS, { min: 1, max: 3_600 });
  const max = r.number("TOKEN_PLACE_API_V1_REQUEST_DEADLINE_MAX_SECONDS", D.DEFAULT_V1_REQUEST_DEADLINE_MAX_SECONDS, { min: 1, max: 3_600 });
  if (min > max) r.problem("TOKEN_PLACE_API_V1_REQUEST_DEADLINE_MIN_SECONDS must not exceed TOKEN_PLACE_API_V1_REQUEST_DEADLINE_MAX_SECONDS");
  const requestDeadlineSeconds = r.number("TOKEN_PLACE_API_V1_REQUEST_DEADLINE_SECONDS", Math.min(Math.max(D.DEFAULT_V1_REQUEST_DEADLINE_SECONDS, min), max), {
    min,
    max,
  });
  const retrieveHoldMs = r.int("RELAY_V1_RETRIEVE_HOLD_MS", D.DEFAULT_V1_RETRIEVE_HOLD_MS, { min: 0, max: 9_000 });
  if (retrieveHoldMs > 0 && retrieveHoldMs < 1_000) r.problem(`RELAY_V1_RETRIEVE_HOLD_MS: must be 0 (off) or at least 1000, got ${retrieveHoldMs}`);

  for (const name of OPERATOR_TOKEN_VARS) {
    if (r.isBlank(name)) r.problem(`${name}: set but empty; unset it to leave operator unregister off`);
  }
  const operatorTokens = [...new Set(OPERATOR_TOKEN_VARS.flatMap((name) => r.list(name)))];
  if (operatorTokens.some((t) => t.length < 16)) r.problem("TOKEN_PLACE_OPERATOR_TOKEN (and rotation aliases): every token must be at least 16 characters");

  return {
    leaseSeconds,
    pollWaitSeconds,
    inFlightTtlSeconds,
    requestDeadlineSeconds,
    tombstoneTtlSeconds: r.number("TOKEN_PLACE_API_V1_CONTROL_TOMBSTONE_TTL_SECONDS", D.DEFAULT_V1_TOMBSTONE_TTL_SECONDS, { min: 1, max: 300 }),
    terminalTtlSeconds: r.number("TOKENPLACE_TERMINAL_REQUEST_TTL_SECONDS", D.DEFAULT_V1_TERMINAL_TTL_SECONDS, { min: 1, max: 86_400 }),
    pendingTtlSeconds: r.number("TOKENPLACE_PENDING_REQUEST_TTL_SECONDS", D.DEFAULT_V1_PENDING_TTL_SECONDS, { min: 1, max: 86_400 }),
    maxQueueDepthPerNode: r.int("TOKEN_PLACE_API_V1_MAX_QUEUE_DEPTH_PER_NODE", D.DEFAULT_V1_MAX_QUEUE_DEPTH_PER_NODE, { min: 1, max: 100_000 }),
    retrieveHoldMs,
    maxRequests: r.int("RELAY_V1_MAX_REQUESTS", D.DEFAULT_V1_MAX_REQUESTS, { min: 1, max: 1_000_000 }),
    maxStoredBytes,
    maxStoredBytesPerClient,
    operatorTokens,
    legacyRoutes,
  };
}
