import type { Logger } from "pino";
import type { Registry } from "prom-client";
import * as D from "../config/defaults.ts";
import type { MemoryBudget } from "../config/memory.ts";
import { LARGE_BODY_BYTES, busy } from "../http/body-budget.ts";
import type { ReadinessCheck } from "./health.ts";
import { GUARD_LEVELS, createMemoryMetrics, type GuardLevel } from "./memory-metrics.ts";

/**
 * The memory guard: a resource monitor on the relay's RSS with actions at thresholds, after
 * Envoy's overload manager (envoy.overload_actions.shrink_heap, stop_accepting_requests). The
 * shares of RELAY_MEMORY_BUDGET_BYTES bound what clients may make the relay hold; this watches
 * what it actually holds, because the garbage of bodies already read (Bun's buffer, the decoded
 * text, the parsed copy) stays resident until JavaScriptCore collects, and JSC sizes its heap from
 * the host's RAM, not the container's limit. Levels (src/config/memory.ts, all in the headroom):
 *
 * - collect: a forced full collection (`Bun.gc(true)`) whenever RSS has grown by 1/8 of the
 *   headroom since the last one ended (at most every MEMORY_GUARD_GC_MIN_INTERVAL_MS); below it the
 *   guard admits again (the low-water mark);
 * - shed clients: bodies of at least MEMORY_GUARD_SMALL_BODY_BYTES (or of unknown size) on client
 *   routes are refused before a byte is read, 503 busy with reason "memory" and Retry-After;
 * - shed all: node routes' large bodies too.
 *
 * Small bodies always pass: nodes' polls, retrieves and small requests go on, so dispatch never
 * stops, and nodes' answers (accepted work completing) pass until the last level.
 *
 * Independently of the levels, a collection when load has passed: once the open requests fell
 * from at least SHRINK_PEAK_REQUESTS to at most SHRINK_LOW_REQUESTS and stayed there
 * SHRINK_QUIET_MS, a full collection, at most every SHRINK_MIN_INTERVAL_MS; and `Bun.shrink()`
 * (JavaScriptCore drops unused memory and compiled code) only when RSS is still in play after it
 * (at least half the collect level). Measured on the compiled relay after 9,500 proxied streams
 * closed: a collection alone handed back ~3 MiB, collection and shrink ~8 MiB; but the shrink's
 * dropped code is compiled again by the next burst, which then ran cold (TTFB p50 at 100 proxied
 * streams 27-33 ms after a shrink against 9-14 ms without, docs/proxy.md): ~5 MiB on a relay far
 * below its budget is not worth that, while near the budget the memory is.
 */
export interface MemoryGuard {
  /** True while large bodies are refused: the one check on every request's path. */
  readonly shedding: boolean;
  readonly level: GuardLevel;
  /** Called only while shedding: throws the refusal when this request's body must wait. */
  checkBody(req: Request, nodeRoute: boolean): void;
  /** Reads RSS now and acts on it (the interval does this; so does every large body read). */
  sample(): void;
  /**
   * A body of `n` bytes was reserved or released (the body budget reports those past its small
   * size): a large one is sampled at once; any marks memory as in play for one idle period.
   */
  bodyRead(n: number): void;
  /** /healthz detail (always ok: shedding is not unreadiness, the pod keeps serving polls). */
  readonly healthCheck: ReadinessCheck;
  close(): void;
}

export interface MemoryGuardDeps {
  budget: Pick<MemoryBudget, "bytes" | "shares" | "guard">;
  registry: Registry;
  logger: Logger;
  /** Resident bytes of this process; default process.memoryUsage.rss() (reads /proc/self/statm). */
  readRss?: () => number;
  /** A synchronous full collection; default Bun.gc(true). */
  collect?: () => void;
  /** Requests open right now (the server's pendingRequests); without it the guard never shrinks. */
  pending?: () => number;
  /** Hands unused memory back after load passed; default Bun.shrink(). */
  shrink?: () => void;
  /** Milliseconds on a monotonic clock; default performance.now(). */
  now?: () => number;
  /** Sampling period while memory is in play (default MEMORY_GUARD_INTERVAL_MS). */
  intervalMs?: number;
  /** Sampling period otherwise (default MEMORY_GUARD_IDLE_INTERVAL_MS, or intervalMs when only that is given). */
  idleIntervalMs?: number;
}

/** Load counts as high once this many requests are open at once (held polls, streams, bodies being read). */
export const SHRINK_PEAK_REQUESTS = 1_000;
/** ... and as passed once at most this many are open ... */
export const SHRINK_LOW_REQUESTS = 16;
/** ... for this long: a lull between two bursts is not the end of the load. */
export const SHRINK_QUIET_MS = 2_000;
/**
 * At most one shrink per this long: it pauses the one JS thread (measured ~40 ms after 10,000
 * held polls) and drops compiled code, which the next burst compiles again; at this rate that is
 * under 0.5 % of the thread even for a relay whose load comes and goes all the time.
 */
export const SHRINK_MIN_INTERVAL_MS = 10_000;

export const memoryBusy = () => busy("memory", "The relay is near its memory budget; retry shortly");

export function createMemoryGuard(deps: MemoryGuardDeps): MemoryGuard {
  const { guard: levels } = deps.budget;
  const rawRss = deps.readRss ?? (() => process.memoryUsage.rss());
  let lastRss = 0;
  // Reading RSS opens /proc/self/statm: with every file descriptor taken (EMFILE, a crowd of
  // sockets) that throws, and a throw in the interval's callback would end the process. Keep the
  // last reading until the next one succeeds.
  const readRss = () => {
    try {
      lastRss = rawRss();
    } catch {
      /* keep lastRss */
    }
    return lastRss;
  };
  const collect = deps.collect ?? (() => Bun.gc(true));
  // Bun.shrink is marked deprecated in bun-types without a replacement; it is the one call that
  // returns JavaScriptCore's unused memory (measured: see the module comment).
  const shrink = deps.shrink ?? (() => (Bun as unknown as { shrink(): void }).shrink());
  const clock = deps.now ?? (() => performance.now());
  let peaked = false;
  let quietSince: number | undefined;
  let lastShrink = -Infinity;
  let level: GuardLevel = 0;
  let lastCollect = -Infinity;
  /** RSS when the last forced collection ended (or lower since): what is live, not garbage. */
  let afterCollect = 0;
  const gcGrowth = Math.floor(deps.budget.shares.headroomBytes * D.MEMORY_GUARD_GC_GROWTH_SHARE);
  /** RSS from which memory is in play: sampled at the short period, and shrunk after load. */
  const inPlayBytes = Math.floor(levels.collectBytes / 2);
  const metrics = createMemoryMetrics(deps.registry, deps.budget, { rss: readRss, level: () => level });
  const log = deps.logger.child({ component: "memory-guard" });

  /** The shrink after load passed (see the module comment). */
  function shrinkAfterLoad(now: number): void {
    const open = deps.pending!();
    if (open >= SHRINK_PEAK_REQUESTS) {
      peaked = true;
      quietSince = undefined;
      return;
    }
    if (!peaked || open > SHRINK_LOW_REQUESTS) {
      quietSince = undefined;
      return;
    }
    quietSince ??= now;
    if (now - quietSince < SHRINK_QUIET_MS || now - lastShrink < SHRINK_MIN_INTERVAL_MS) return;
    const before = readRss();
    collect();
    const shrunk = readRss() >= inPlayBytes;
    if (shrunk) {
      shrink();
      metrics.shrunk();
    }
    lastShrink = clock();
    peaked = false;
    quietSince = undefined;
    log.info({ openRequests: open, rssBytes: before, shrunk, tookMs: Math.round(lastShrink - now) }, "memory guard: load passed, memory handed back");
  }

  function sample(): void {
    if (!levels.enabled) return;
    if (deps.pending) shrinkAfterLoad(clock());
    let rss = readRss();
    const now = performance.now();
    if (rss >= levels.collectBytes && rss - afterCollect >= gcGrowth && now - lastCollect >= D.MEMORY_GUARD_GC_MIN_INTERVAL_MS) {
      collect();
      const after = performance.now();
      lastCollect = after;
      metrics.collected((after - now) / 1000);
      rss = readRss();
      afterCollect = rss;
    }
    // RSS fell on its own (the runtime collected): growth counts from there.
    if (rss < afterCollect) afterCollect = rss;
    // Up at once; down only below the level's own threshold, and to admitting only below the
    // collect level: hysteresis, so a relay hovering at a threshold does not flap.
    const next: GuardLevel =
      rss >= levels.shedAllBytes ? 2 : rss >= levels.shedClientsBytes ? 1 : rss >= levels.collectBytes && level > 0 ? 1 : 0;
    if (next !== level) {
      const line = { from: GUARD_LEVELS[level], to: GUARD_LEVELS[next], rssBytes: rss, budgetBytes: deps.budget.bytes };
      if (next > level) log.warn(line, "memory guard: refusing large bodies");
      else log.info(line, "memory guard: level down");
      level = next;
    }
    retime();
  }

  const busyMs = deps.intervalMs ?? D.MEMORY_GUARD_INTERVAL_MS;
  const idleMs = deps.idleIntervalMs ?? deps.intervalMs ?? D.MEMORY_GUARD_IDLE_INTERVAL_MS;
  /** When the last body past the budget's small size was reserved or released. */
  let lastBodyAt = -Infinity;
  /**
   * Memory is in play: sample at the short period (see MEMORY_GUARD_IDLE_INTERVAL_MS). Bodies below
   * the large size are not sampled one by one, but a stream of them is garbage RSS grows by.
   */
  const busy = () =>
    level > 0 ||
    lastRss >= inPlayBytes ||
    peaked ||
    clock() - lastBodyAt < idleMs ||
    (deps.pending !== undefined && deps.pending() > SHRINK_LOW_REQUESTS);
  let timer: ReturnType<typeof setTimeout> | undefined;
  let armedMs = 0;
  let closed = false;
  const tick = () => {
    timer = undefined;
    sample();
  };
  // A timer re-armed by each sample, not an interval: its period follows the load, and a sample
  // taken for a large body that finds memory in play shortens a pending idle wait at once.
  function retime(): void {
    if (closed) return;
    const want = busy() ? busyMs : idleMs;
    if (timer !== undefined && armedMs === want) return;
    if (timer !== undefined) clearTimeout(timer);
    armedMs = want;
    timer = setTimeout(tick, want);
    timer.unref();
  }
  if (levels.enabled) sample();

  return {
    get shedding() {
      return level > 0;
    },
    get level() {
      return level;
    },
    checkBody(req, nodeRoute) {
      if (level === 0 || !req.body) return;
      const declared = req.headers.get("content-length");
      if (declared !== null && Number(declared) < D.MEMORY_GUARD_SMALL_BODY_BYTES) return;
      if (nodeRoute && level < 2) return;
      metrics.refused(nodeRoute ? "node" : "client");
      throw memoryBusy();
    },
    sample,
    bodyRead(n) {
      if (!levels.enabled) return;
      if (n >= LARGE_BODY_BYTES) return sample();
      lastBodyAt = clock();
      if (armedMs !== busyMs) retime();
    },
    healthCheck: {
      name: "memory",
      check: async () => ({ ok: true, detail: { memoryGuard: levels.enabled ? GUARD_LEVELS[level] : "off" } }),
    },
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
    },
  };
}
