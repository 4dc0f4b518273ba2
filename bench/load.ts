/**
 * A closed-loop load generator: a fixed number of workers, each issuing its next request as soon
 * as the previous one finished, over keep-alive connections (Bun's fetch pools them). Every run
 * is bounded twice, by wall time and by request count, so a wedged server cannot hang the bench.
 */

export interface LoadResult {
  /** Iterations that succeeded (an iteration may be several requests, e.g. faucet + sink). */
  completed: number;
  failed: number;
  elapsedMs: number;
  firstError?: string;
}

export interface LoadOptions {
  concurrency: number;
  durationMs: number;
  maxIterations: number;
  /** One iteration for worker `w`; resolves true when it did what it should. */
  iteration: (worker: number) => Promise<boolean>;
}

export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  let started = 0;
  let completed = 0;
  let failed = 0;
  let firstError: string | undefined;
  const t0 = performance.now();
  const deadline = t0 + opts.durationMs;
  const worker = async (w: number) => {
    while (performance.now() < deadline && started < opts.maxIterations) {
      started++;
      try {
        if (await opts.iteration(w)) completed++;
        else failed++;
      } catch (err) {
        failed++;
        firstError ??= err instanceof Error ? err.message : String(err);
        // A refused connection fails instantly: do not spin a core on it.
        await Bun.sleep(5);
      }
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, (_, w) => worker(w)));
  const result: LoadResult = { completed, failed, elapsedMs: performance.now() - t0 };
  if (firstError !== undefined) result.firstError = firstError;
  return result;
}

/** Sums rounds of the same scenario (rounds are interleaved with the baseline to share drift). */
export function mergeLoad(results: LoadResult[]): LoadResult & { perSecond: number } {
  const merged: LoadResult = { completed: 0, failed: 0, elapsedMs: 0 };
  for (const r of results) {
    merged.completed += r.completed;
    merged.failed += r.failed;
    merged.elapsedMs += r.elapsedMs;
    if (r.firstError !== undefined) merged.firstError ??= r.firstError;
  }
  return { ...merged, perSecond: merged.elapsedMs > 0 ? (merged.completed * 1000) / merged.elapsedMs : 0 };
}

export interface Distribution {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentiles: with a few hundred samples, interpolation adds false precision. */
export function distribution(samples: number[]): Distribution {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? NaN;
  const mean = sorted.reduce((s, v) => s + v, 0) / (sorted.length || 1);
  return { count: sorted.length, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: sorted[sorted.length - 1] ?? NaN, mean };
}

/** POSTs JSON and returns the parsed body with the status (bench code: no retries, no tap). */
export async function postJson(url: string, body: string, signal?: AbortSignal): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body,
    signal: signal ?? AbortSignal.timeout(10_000),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}
