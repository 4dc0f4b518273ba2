import type { Env } from "../config/index.ts";

export const HEALTHCHECK_TIMEOUT_MS = 3_000;

/**
 * `tokenplace-relay healthcheck [--url URL] [--timeout MS]`: the container HEALTHCHECK and the
 * chart's `helm test` hook (distroless has no shell or curl). Exit 0 on a 2xx, else 1.
 */
export async function healthcheck(args: string[], env: Env): Promise<number> {
  let url: string | undefined;
  let timeoutMs = HEALTHCHECK_TIMEOUT_MS;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--url") url = args[++i];
    else if (a.startsWith("--url=")) url = a.slice(6);
    else if (a === "--timeout") timeoutMs = Number(args[++i]);
    else if (a.startsWith("--timeout=")) timeoutMs = Number(a.slice(10));
    else {
      console.error(`healthcheck: unknown argument ${JSON.stringify(a)}`);
      return 2;
    }
  }
  if (!url) {
    const port = (env.RELAY_PORT ?? "").trim() || "5010";
    url = `http://127.0.0.1:${port}/livez`;
  }
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) timeoutMs = HEALTHCHECK_TIMEOUT_MS;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), redirect: "manual" });
    await res.body?.cancel().catch(() => {});
    if (res.status >= 200 && res.status < 300) return 0;
    console.error(`healthcheck: ${url} answered ${res.status}`);
    return 1;
  } catch (err) {
    console.error(`healthcheck: ${url} unreachable: ${(err as Error).message}`);
    return 1;
  }
}
