/**
 * Section "startup" of `npm run bench`: from spawning the compiled relay binary to its first 200
 * on `/healthz` (polled every millisecond over fresh connections, so the figure includes up to
 * ~1 ms of polling), the median of `runs` starts, beside a bare compiled `Bun.serve`
 * (bench/baseline-server.ts compiled the same way) answering the same path; starts alternate.
 * The relay runs broker-only (TOKENPLACE_RELAY_ONLY=true, so no upstream is probed) with every
 * other setting at its default.
 */
import { join } from "node:path";
import { distribution } from "./load.ts";
import { freePort, REPO } from "./peers.ts";
import { markdown, msText, ratioText, type SectionResult, type Target } from "./report.ts";
import { startOnPort } from "./child.ts";

export const STARTUP_TARGET_MS = 30;

/** Compiles bench/baseline-server.ts into `dir` (the bare compiled Bun.serve). */
export function compileBare(dir: string): string {
  const out = join(dir, "bare-bun-serve");
  const r = Bun.spawnSync([process.execPath, "build", "--compile", "--no-compile-autoload-dotenv", "--no-compile-autoload-bunfig", join(REPO, "bench/baseline-server.ts"), "--outfile", out], { cwd: REPO, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`bun build --compile bench/baseline-server.ts failed: ${r.stderr.toString()}`);
  return out;
}

export async function startupSection(relayBin: string, bareBin: string, runs: number, logDir: string, log: (m: string) => void): Promise<SectionResult> {
  const samples = { relay: [] as number[], bare: [] as number[] };
  const failures: string[] = [];
  log(`startup: ${runs} starts each...`);
  for (let i = 0; i < runs; i++) {
    for (const which of i % 2 === 0 ? (["relay", "bare"] as const) : (["bare", "relay"] as const)) {
      const port = await freePort();
      try {
        const s = await startOnPort(
          which === "relay"
            ? { name: "startup-relay", cmd: [relayBin], env: { RELAY_PORT: String(port), RELAY_HOST: "127.0.0.1", TOKENPLACE_RELAY_ONLY: "true" }, port, logDir }
            : { name: "startup-bare", cmd: [bareBin], env: { BASELINE_PORT: String(port) }, port, logDir },
        );
        samples[which].push(s.readyMs);
        await s.stop();
      } catch (err) {
        failures.push(`startup ${which}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }
  const relay = distribution(samples.relay);
  const bare = distribution(samples.bare);
  const targets: Target[] = [{ what: "start-up to first /healthz 200 (median)", figure: msText(relay.p50), target: `<= ${STARTUP_TARGET_MS} ms`, met: relay.count > 0 ? relay.p50 <= STARTUP_TARGET_MS : undefined }];
  const row = (name: string, d: typeof relay) => [name, msText(d.p50), `${msText(Math.min(...(name.startsWith("relay") ? samples.relay : samples.bare)))} – ${msText(d.max)}`, String(d.count)];
  const body = [
    markdown(["binary", "median", "range", "starts"], [row("relay (compiled, broker-only, defaults)", relay), row("bare compiled Bun.serve", bare)]),
    "",
    `Relay / bare: ${ratioText(relay.p50 / bare.p50)} (medians).`,
  ].join("\n");
  return { body, targets, failures, json: { runs, relayMs: samples.relay, bareMs: samples.bare, relay, bare } };
}
