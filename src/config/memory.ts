import { readFileSync } from "node:fs";
import * as D from "./defaults.ts";
import type { EnvReader } from "./env-reader.ts";

/** A cgroup limit this large means "no limit" (v1 reports ~2^63 rounded to the page size). */
const UNLIMITED = 2 ** 60;

export interface MemoryBudget {
  /** Bytes of stored payloads (queued requests, answers, progress, stream chunks) the relay may hold. */
  bytes: number;
  /** Where the number came from, for --check-config and the start-up line. */
  source: "setting" | "cgroup v2 memory.max" | "cgroup v1 memory.limit_in_bytes" | "default (no container limit)";
  /** The container's memory limit, when there is one. */
  containerLimitBytes?: number;
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

/**
 * RELAY_MEMORY_BUDGET_BYTES: what stored payloads may take, so the relay answers 503 storage_full
 * long before the kernel kills it. Default: a share of the container's limit (the rest is the
 * runtime, request bodies being read, and headroom), or a constant where no limit is set.
 */
export function loadMemoryBudget(r: EnvReader, read: ReadText = readText): MemoryBudget {
  const limit = containerMemoryLimit(read);
  if (r.raw("RELAY_MEMORY_BUDGET_BYTES") !== undefined) {
    const bytes = r.int("RELAY_MEMORY_BUDGET_BYTES", D.DEFAULT_MEMORY_BUDGET_BYTES, { min: D.MIN_MEMORY_BUDGET_BYTES, max: 64 * 1024 ** 3 });
    if (limit && bytes > limit.bytes * D.MAX_MEMORY_BUDGET_SHARE) {
      r.problem(
        `RELAY_MEMORY_BUDGET_BYTES: ${bytes} is more than ${D.MAX_MEMORY_BUDGET_SHARE * 100}% of the container's memory limit (${limit.bytes}, ${limit.source}); the kernel would kill the relay before the budget refuses anything`,
      );
    }
    return { bytes, source: "setting", containerLimitBytes: limit?.bytes };
  }
  if (limit) {
    const bytes = Math.max(D.MIN_MEMORY_BUDGET_BYTES, Math.floor(limit.bytes * D.MEMORY_BUDGET_SHARE_OF_LIMIT));
    return { bytes, source: limit.source, containerLimitBytes: limit.bytes };
  }
  return { bytes: D.DEFAULT_MEMORY_BUDGET_BYTES, source: "default (no container limit)" };
}
