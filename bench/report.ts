/** Formats the benchmark's table. Ratios are relay / baseline from the same run. */
import { cpus, loadavg, platform, arch, totalmem } from "node:os";
import type { Distribution } from "./load.ts";

export interface Row {
  name: string;
  relay: string;
  baseline: string;
  /** relay / baseline; for throughput < 1 means slower, for latency > 1 means slower. */
  ratio: number | undefined;
}

export const rate = (n: number, unit: string) => `${Math.round(n).toLocaleString("en-US")} ${unit}`;
export const msText = (n: number) => (Number.isFinite(n) ? `${n < 10 ? n.toFixed(2) : n.toFixed(1)} ms` : "n/a");

export function machineFacts(): Record<string, string | number> {
  const cpu = cpus();
  return {
    bun: `${Bun.version} (${Bun.revision.slice(0, 9)})`,
    os: `${platform()} ${arch()}`,
    cores: cpu.length,
    cpu: cpu[0]?.model.trim() ?? "unknown",
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    loadavg1m: Math.round((loadavg()[0] ?? 0) * 100) / 100,
  };
}

export function latencyRows(label: string, relay: Distribution, baseline: Distribution): Row[] {
  return (["p50", "p90", "p99", "max"] as const).map((q) => ({
    name: `${label} ${q}`,
    relay: msText(relay[q]),
    baseline: msText(baseline[q]),
    ratio: baseline[q] > 0 ? relay[q] / baseline[q] : undefined,
  }));
}

export function table(rows: Row[]): string {
  const head: [string, string, string, string] = ["scenario", "relay", "baseline (same run)", "ratio relay/baseline"];
  const cells = rows.map((r) => [r.name, r.relay, r.baseline, r.ratio === undefined ? "" : `${r.ratio.toFixed(2)}x`]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => c.map((v, i) => (i === 0 ? v.padEnd(widths[i]!) : v.padStart(widths[i]!))).join("  ");
  return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...cells.map(line)].join("\n");
}
