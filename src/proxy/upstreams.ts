import type { Clock } from "../clock.ts";
import { upstreamRoot } from "./target.ts";

/**
 * The upstream set: round robin over the configured URLs with passive ejection. An upstream that
 * failed at the connection level (refused, DNS, reset or silent before the response head) is
 * skipped for `ejectMs`; HTTP error statuses do not eject (a 500 from the model server is an
 * answer, not an outage). With every upstream ejected, the one whose ejection ends first is still
 * tried: refusing outright would turn a brief blip into a guaranteed failure.
 */

export interface Upstream {
  readonly url: URL;
  /** What a request's path and query are appended to (target.ts upstreamRoot), worked out once. */
  readonly root: string;
  /** Stable label for metrics and logs (no credentials: config refuses them in URLs). */
  readonly label: string;
}

interface State {
  upstream: Upstream;
  ejectedUntil: number;
}

export interface UpstreamPool {
  readonly all: readonly Upstream[];
  /** Upstreams to try for one request, in order: healthy ones from the round-robin cursor first. */
  plan(): Upstream[];
  failed(u: Upstream): void;
  succeeded(u: Upstream): void;
  isEjected(u: Upstream): boolean;
}

export function labelFor(url: URL): string {
  return url.href.replace(/\/$/, "");
}

export function createUpstreamPool(urls: readonly URL[], clock: Clock, ejectMs: number): UpstreamPool {
  if (urls.length === 0) throw new Error("proxy: at least one upstream is required");
  const states: State[] = urls.map((url) => ({ upstream: { url, root: upstreamRoot(url), label: labelFor(url) }, ejectedUntil: 0 }));
  const byUpstream = new Map(states.map((s) => [s.upstream, s]));
  let cursor = 0;

  function plan(): Upstream[] {
    const now = clock.now();
    const start = cursor;
    cursor = (cursor + 1) % states.length;
    const rotated = states.map((_, i) => states[(start + i) % states.length]!);
    const healthy = rotated.filter((s) => s.ejectedUntil <= now);
    const ejected = rotated.filter((s) => s.ejectedUntil > now).sort((a, b) => a.ejectedUntil - b.ejectedUntil);
    // Ejected upstreams stay last-resort candidates, soonest-to-return first.
    return [...healthy, ...ejected].map((s) => s.upstream);
  }

  function failed(u: Upstream): void {
    const s = byUpstream.get(u);
    if (!s) return;
    if (ejectMs > 0 && states.length > 1) s.ejectedUntil = clock.now() + ejectMs;
  }

  function succeeded(u: Upstream): void {
    const s = byUpstream.get(u);
    if (s) s.ejectedUntil = 0;
  }

  return {
    all: states.map((s) => s.upstream),
    plan,
    failed,
    succeeded,
    isEjected: (u) => (byUpstream.get(u)?.ejectedUntil ?? 0) > clock.now(),
  };
}
