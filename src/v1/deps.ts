import type { Deliver } from "../http/delivery.ts";
import { sha256Hex } from "../common/tokens.ts";
import type { LongPoll } from "../common/long-poll.ts";
import type { Notifier } from "../common/notifier.ts";
import type { Pacer } from "../common/pacing.ts";
import type { RateLimits } from "../common/rate-limits.ts";
import type { ApiV1Config } from "../config/api-v1.ts";
import { readJsonObject, type JsonObject } from "../http/json.ts";
import type { V1Metrics } from "./metrics.ts";
import type { V1Store } from "./store.ts";

/** What every API v1 handler factory receives. */
export interface V1Deps {
  store: V1Store;
  notifier: Notifier;
  /** Holds of compute nodes (servers/poll). */
  longPoll: LongPoll;
  /** Holds of clients (responses/retrieve): a budget of their own. */
  clientLongPoll: LongPoll;
  metrics: V1Metrics;
  config: ApiV1Config;
  maxBodyBytes: number;
  /** Release metadata for /api/v1/meta and /api/v1/version. */
  release: { version: string; revision: string; environment: string };
  /** Per-node-identity quotas (spec §11); the per-address buckets are charged before the handler. */
  limits: RateLimits;
  /** Paces retrieves past their address's hold share (src/common/pacing.ts); absent: 429 at once. */
  pacer?: Pacer;
  /** Hands out an answer taken from the store, or gives it back if the connection ends first (src/http/delivery.ts). */
  deliver: Deliver;
}

export const reader = (maxBodyBytes: number) => (req: Request): Promise<JsonObject | undefined> => readJsonObject(req, maxBodyBytes);

/** Seconds left as the peers read them (spec §6.2 request_ttl_seconds): never negative, ms precision. */
export const secondsLeft = (remainingMs: number) => Math.max(0, Math.round(remainingMs)) / 1000;

/**
 * Logs name a key by a fingerprint only (spec §10): the first 12 hex digits of its SHA-256, the
 * same `key_fingerprint` the upstream node logs, so relay and node logs can be joined. (Upstream's
 * relay logs the first 8 and last 4 characters, which for base64 PEM keys always start "LS0tLS1C".)
 */
export const fingerprint = (key: string) => sha256Hex(key).slice(0, 12);
