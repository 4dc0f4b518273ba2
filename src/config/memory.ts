import { readFileSync } from "node:fs";
import * as D from "./defaults.ts";
import type { EnvReader } from "./env-reader.ts";

/** A cgroup limit this large means "no limit" (v1 reports ~2^63 rounded to the page size). */
const UNLIMITED = 2 ** 60;

/**
 * The relay's memory ceiling and how it is shared out. The budget bounds the process's resident
 * memory (RSS) as a whole, not only what it stores: the runtime takes its reserve off the top, and
 * the working memory left is split between stored payloads, request bodies being read (counted at
 * MEMORY_BODY_COST_MULTIPLE times their size) and headroom for garbage not yet collected. The
 * shares bound what clients can make the relay hold; the memory guard (src/ops/memory-guard.ts)
 * watches RSS itself and refuses large bodies before it passes the ceiling.
 */
export interface MemoryBudget {
  /** RELAY_MEMORY_BUDGET_BYTES: the ceiling for the relay's RSS. */
  bytes: number;
  /** Where the number came from, for --check-config and the start-up line. */
  source: "setting" | "cgroup v2 memory.max" | "cgroup v1 memory.limit_in_bytes" | "default (no container limit)";
  /** The container's memory limit, when there is one. */
  containerLimitBytes?: number;
  /** The shares of `bytes`; they add up to it. */
  shares: MemoryShares;
  /** RSS levels at which the memory guard acts, ascending (see src/ops/memory-guard.ts). */
  guard: MemoryGuardLevels;
}

export interface MemoryShares {
  /** The runtime's own resident size (MEMORY_RUNTIME_RESERVE_BYTES). */
  runtimeBytes: number;
  /** Stored payloads of both protocols (API v1's RELAY_V1_MAX_STORED_BYTES and the legacy share default from it). */
  storedBytes: number;
  /** Request bodies being read, at their accounted cost; the default RELAY_MAX_INFLIGHT_BODY_BYTES is this / the multiple. */
  bodyBytes: number;
  /** Garbage awaiting collection, allocator slack: what the guard's levels live in. */
  headroomBytes: number;
}

export interface MemoryGuardLevels {
  /** RELAY_MEMORY_GUARD: false turns the guard off (the shares still apply). */
  enabled: boolean;
  /** Above: a forced full collection (at most every MEMORY_GUARD_GC_MIN_INTERVAL_MS). Below: admitting again. */
  collectBytes: number;
  /** Above: large client bodies are refused (503 busy, reason memory); node routes still pass. */
  shedClientsBytes: number;
  /** Above: every large body is refused, node routes too. */
  shedAllBytes: number;
}

export type ReadText = (path: string) => string | undefined;
const readText: ReadText = (path) => {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return undefined;
  }
};

/** The container's memory limit from cgroup v2, else v1; undefined when unlimited or unknown. */
export function containerMemoryLimit(read: ReadText = readText): { bytes: number; source: MemoryBudget["source"] } | undefined {
  const v2 = read("/sys/fs/cgroup/memory.max");
  if (v2 !== undefined && /^\d+$/.test(v2) && Number(v2) < UNLIMITED) return { bytes: Number(v2), source: "cgroup v2 memory.max" };
  const v1 = read("/sys/fs/cgroup/memory/memory.limit_in_bytes");
  if (v1 !== undefined && /^\d+$/.test(v1) && Number(v1) < UNLIMITED) return { bytes: Number(v1), source: "cgroup v1 memory.limit_in_bytes" };
  return undefined;
}

/** Splits a ceiling into its shares and the guard's levels (all whole bytes, shares summing to `bytes`). */
export function memoryShares(bytes: number, guardEnabled = true): { shares: MemoryShares; guard: MemoryGuardLevels } {
  const runtimeBytes = Math.min(bytes, D.MEMORY_RUNTIME_RESERVE_BYTES);
  const working = bytes - runtimeBytes;
  const storedBytes = Math.floor(working * D.MEMORY_STORED_SHARE);
  const bodyBytes = Math.floor(working * D.MEMORY_BODY_SHARE);
  const headroomBytes = working - storedBytes - bodyBytes;
  // The guard works in the headroom: collect once RSS reaches it (the shares are full, or garbage
  // sits where they are not), refuse client bodies halfway through it, everything large at 3/4,
  // so the last quarter covers what arrives between two samples.
  const inHeadroom = (f: number) => bytes - headroomBytes + Math.floor(headroomBytes * f);
  return {
    shares: { runtimeBytes, storedBytes, bodyBytes, headroomBytes },
    guard: { enabled: guardEnabled, collectBytes: inHeadroom(0), shedClientsBytes: inHeadroom(0.5), shedAllBytes: inHeadroom(0.75) },
  };
}

/**
 * RELAY_MEMORY_BUDGET_BYTES: the relay's RSS ceiling, so it answers 503 storage_full / busy long
 * before the kernel kills it. Default: MEMORY_BUDGET_SHARE_OF_LIMIT of the container's limit (the
 * kernel charges socket buffers and page cache to the pod too), or a constant where none is set.
 */
export function loadMemoryBudget(r: EnvReader, read: ReadText = readText): MemoryBudget {
  const limit = containerMemoryLimit(read);
  const guardEnabled = r.bool("RELAY_MEMORY_GUARD", true);
  const build = (bytes: number, source: MemoryBudget["source"]): MemoryBudget => ({
    bytes,
    source,
    ...(limit ? { containerLimitBytes: limit.bytes } : {}),
    ...memoryShares(bytes, guardEnabled),
  });
  if (r.raw("RELAY_MEMORY_BUDGET_BYTES") !== undefined) {
    const bytes = r.int("RELAY_MEMORY_BUDGET_BYTES", D.DEFAULT_MEMORY_BUDGET_BYTES, { min: D.MIN_MEMORY_BUDGET_BYTES, max: 64 * 1024 ** 3 });
    if (limit && bytes > limit.bytes * D.MAX_MEMORY_BUDGET_SHARE) {
      r.problem(
        `RELAY_MEMORY_BUDGET_BYTES: ${bytes} is more than ${D.MAX_MEMORY_BUDGET_SHARE * 100}% of the container's memory limit (${limit.bytes}, ${limit.source}); the kernel would kill the relay before the budget refuses anything`,
      );
    }
    return build(Math.max(bytes, D.MIN_MEMORY_BUDGET_BYTES), "setting");
  }
  if (limit) {
    if (limit.bytes * D.MEMORY_BUDGET_SHARE_OF_LIMIT < D.MIN_MEMORY_BUDGET_BYTES) {
      r.problem(
        `the container's memory limit (${limit.bytes}, ${limit.source}) is too small: the relay needs ${Math.ceil(D.MIN_MEMORY_BUDGET_BYTES / D.MEMORY_BUDGET_SHARE_OF_LIMIT)} bytes (its runtime alone takes ~${D.MEMORY_RUNTIME_RESERVE_BYTES})`,
      );
    }
    return build(Math.max(D.MIN_MEMORY_BUDGET_BYTES, Math.floor(limit.bytes * D.MEMORY_BUDGET_SHARE_OF_LIMIT)), limit.source);
  }
  return build(D.DEFAULT_MEMORY_BUDGET_BYTES, "default (no container limit)");
}
