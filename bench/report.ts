/** Formatting and machine facts for the benchmarks' reports (Markdown; ratios come from the same run). */
import { cpus, loadavg, platform, arch, totalmem } from "node:os";

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
