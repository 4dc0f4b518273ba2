import * as D from "./defaults.ts";
import type { EnvReader } from "./env-reader.ts";
import type { MemoryBudget } from "./memory.ts";

/**
 * Bounds on what clients can make the relay hold: requests at once, body bytes being read, time to
 * send a body, held polls and proxied uploads per client address, URL and header sizes. Each
 * refusal is a JSON error with its own code (README, "Request bounds").
 */
export interface BoundsConfig {
  /** RELAY_MAX_CONNECTIONS: requests in flight (Bun's pendingRequests); beyond: 503 busy. */
  maxConnections: number;
  /**
   * RELAY_MAX_INFLIGHT_BODY_BYTES: body bytes being read at once; beyond: 503 busy. Default: the
   * memory budget's body share divided by what a byte being read costs (MEMORY_BODY_COST_MULTIPLE).
   */
  maxInflightBodyBytes: number;
  /** RELAY_BODY_TIMEOUT_MS: deadline for a whole request body from arrival; beyond: 408. */
  bodyTimeoutMs: number;
  /** RELAY_MAX_HOLDS_PER_IP: held long-polls per client address and budget (0: no per-address cap). */
  maxHoldsPerIp: number;
  /** RELAY_PROXY_MAX_UPLOADS_PER_IP: proxied uploads in progress per client address (0: no cap). */
  proxyMaxUploadsPerIp: number;
  /** RELAY_MAX_URL_BYTES: longest request target; beyond: 414. */
  maxUrlBytes: number;
  /** RELAY_MAX_HEADER_BYTES: largest header section; beyond: 431. */
  maxHeaderBytes: number;
}

export function loadBoundsConfig(r: EnvReader, maxBodyBytes: number, memory: Pick<MemoryBudget, "bytes" | "shares">): BoundsConfig {
  const derived = Math.floor(memory.shares.bodyBytes / D.MEMORY_BODY_COST_MULTIPLE);
  const explicit = r.raw("RELAY_MAX_INFLIGHT_BODY_BYTES") !== undefined;
  const maxInflightBodyBytes = r.int("RELAY_MAX_INFLIGHT_BODY_BYTES", derived, { min: 1_024, max: 16 * 1024 ** 3 });
  // A budget below one maximum body would refuse every maximum-size body forever.
  if (maxInflightBodyBytes < maxBodyBytes) {
    r.problem(
      explicit
        ? `RELAY_MAX_INFLIGHT_BODY_BYTES (${maxInflightBodyBytes}) must be at least RELAY_MAX_BODY_BYTES (${maxBodyBytes})`
        : `RELAY_MEMORY_BUDGET_BYTES (${memory.bytes}) leaves ${memory.shares.bodyBytes} bytes for bodies being read, ${derived} at ${D.MEMORY_BODY_COST_MULTIPLE}x their size: less than one RELAY_MAX_BODY_BYTES (${maxBodyBytes}); raise the budget or lower RELAY_MAX_BODY_BYTES`,
    );
  }
  // Set by hand, the bodies may take the headroom too, never the stored payloads' or the runtime's share.
  const room = memory.shares.bodyBytes + memory.shares.headroomBytes;
  if (explicit && maxInflightBodyBytes * D.MEMORY_BODY_COST_MULTIPLE > room) {
    r.problem(
      `RELAY_MAX_INFLIGHT_BODY_BYTES: ${maxInflightBodyBytes} bytes being read cost ~${maxInflightBodyBytes * D.MEMORY_BODY_COST_MULTIPLE} at ${D.MEMORY_BODY_COST_MULTIPLE}x, more than the ${room} RELAY_MEMORY_BUDGET_BYTES (${memory.bytes}) leaves beside the runtime and stored payloads; at most ${Math.floor(room / D.MEMORY_BODY_COST_MULTIPLE)}`,
    );
  }
  // Above Bun's head limit a relay limit never fires: Bun answers first, with an empty 431.
  const headLimit = { min: 256, max: D.BUN_MAX_HEAD_BYTES };
  return {
    maxConnections: r.int("RELAY_MAX_CONNECTIONS", D.DEFAULT_MAX_CONNECTIONS, { min: 16, max: 1_000_000 }),
    maxInflightBodyBytes,
    bodyTimeoutMs: r.int("RELAY_BODY_TIMEOUT_MS", D.DEFAULT_BODY_TIMEOUT_MS, { min: 100, max: 3_600_000 }),
    maxHoldsPerIp: r.int("RELAY_MAX_HOLDS_PER_IP", D.DEFAULT_MAX_HOLDS_PER_IP, { min: 0, max: 1_000_000 }),
    proxyMaxUploadsPerIp: r.int("RELAY_PROXY_MAX_UPLOADS_PER_IP", D.DEFAULT_PROXY_MAX_UPLOADS_PER_IP, { min: 0, max: 1_000_000 }),
    maxUrlBytes: r.int("RELAY_MAX_URL_BYTES", D.DEFAULT_MAX_URL_BYTES, headLimit),
    maxHeaderBytes: r.int("RELAY_MAX_HEADER_BYTES", D.DEFAULT_MAX_HEADER_BYTES, headLimit),
  };
}
