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

/** A Markdown table; `|` inside a cell is escaped. */
export function markdown(head: string[], rows: string[][]): string {
  const esc = (c: string) => c.replaceAll("|", "\\|");
  return [head, head.map(() => "---"), ...rows].map((r) => `| ${r.map(esc).join(" | ")} |`).join("\n");
}

/** One of the targets beside the figure that judges it. `met` undefined: not measured. */
export interface Target {
  what: string;
  figure: string;
  target: string;
  met: boolean | undefined;
}

export const metText = (met: boolean | undefined) => (met === undefined ? "not measured" : met ? "met" : "NOT met");

/** What a section of `npm run bench` hands back to bench/run.ts. */
export interface SectionResult {
  /** Markdown: tables and the notes that go with them. */
  body: string;
  targets: Target[];
  /** Anything that failed (a request, a sample): the run then exits 1. */
  failures: string[];
  /** The figures for BENCH_JSON. */
  json: unknown;
}

export const ratioText = (r: number) => (Number.isFinite(r) && r > 0 ? `${r < 0.1 ? r.toFixed(4) : r.toFixed(2)}x` : "n/a");
export const pctText = (r: number) => (Number.isFinite(r) ? `${(r * 100).toFixed(0)} %` : "n/a");
export const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/** First line of `cmd`'s output (stdout, else stderr), or "not installed". */
export function toolVersion(cmd: string[], pattern?: RegExp): string {
  try {
    const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
    const out = `${r.stdout.toString()}\n${r.stderr.toString()}`.trim();
    const m = pattern ? pattern.exec(out) : undefined;
    return m ? m[0] : (out.split("\n")[0] ?? "").trim() || "not installed";
  } catch {
    return "not installed";
  }
}

/** Versions of every tool the bench runs, for results.md. */
export function toolVersions(python: string): Record<string, string> {
  return {
    bun: `${Bun.version} (${Bun.revision.slice(0, 9)})`,
    wrk: toolVersion(["wrk", "-v"], /wrk \S+/),
    nginx: toolVersion(["nginx", "-v"], /nginx\/\S+/),
    "redis-server": toolVersion(["redis-server", "--version"], /v=\S+/).replace("v=", ""),
    python: toolVersion([python, "--version"], /Python \S+/),
  };
}
