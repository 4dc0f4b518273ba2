/**
 * Reads typed settings from an environment map and collects every problem instead of stopping at
 * the first, so an operator fixes a bad deployment in one round trip.
 */
export type Env = Readonly<Record<string, string | undefined>>;

export interface IntOptions {
  min?: number;
  max?: number;
}

export class EnvReader {
  readonly problems: string[] = [];
  /** Every variable name this reader was asked about: the set of settings the relay knows. */
  readonly names = new Set<string>();

  constructor(private readonly env: Env) {}

  raw(name: string): string | undefined {
    this.names.add(name);
    const value = this.env[name];
    if (value === undefined) return undefined;
    const trimmed = value.trim();
    return trimmed === "" ? undefined : trimmed;
  }

  /** Set, but to nothing but white space: for secrets that is a mistake, never "unset". */
  isBlank(name: string): boolean {
    this.names.add(name);
    const value = this.env[name];
    return value !== undefined && value.trim() === "";
  }

  problem(message: string): void {
    this.problems.push(message);
  }

  string(name: string, fallback: string): string {
    return this.raw(name) ?? fallback;
  }

  int(name: string, fallback: number, opts: IntOptions = {}): number {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if (!/^-?\d+$/.test(value)) {
      this.problem(`${name}: expected an integer, got ${JSON.stringify(value)}`);
      return fallback;
    }
    const n = Number(value);
    if (!Number.isSafeInteger(n)) {
      this.problem(`${name}: ${value} is out of range`);
      return fallback;
    }
    return this.inRange(name, n, fallback, opts);
  }

  /** A finite decimal number (seconds may be fractional); out of range is a problem, never clamped. */
  number(name: string, fallback: number, opts: IntOptions = {}): number {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const n = /^-?(\d+(\.\d*)?|\.\d+)$/.test(value) ? Number(value) : Number.NaN;
    if (!Number.isFinite(n)) {
      this.problem(`${name}: expected a number, got ${JSON.stringify(value)}`);
      return fallback;
    }
    return this.inRange(name, n, fallback, opts);
  }

  /** Out of range is a problem (and the fallback keeps the rest of the check going), never clamped. */
  private inRange(name: string, n: number, fallback: number, opts: IntOptions): number {
    if (opts.min !== undefined && n < opts.min) {
      this.problem(`${name}: must be >= ${opts.min}, got ${n}`);
      return fallback;
    }
    if (opts.max !== undefined && n > opts.max) {
      this.problem(`${name}: must be <= ${opts.max}, got ${n}`);
      return fallback;
    }
    return n;
  }

  bool(name: string, fallback: boolean): boolean {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const v = value.toLowerCase();
    if (["1", "true", "yes", "on"].includes(v)) return true;
    if (["0", "false", "no", "off"].includes(v)) return false;
    this.problem(`${name}: expected true or false, got ${JSON.stringify(value)}`);
    return fallback;
  }

  oneOf<T extends string>(name: string, allowed: readonly T[], fallback: T): T {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const v = value.toLowerCase() as T;
    if (allowed.includes(v)) return v;
    this.problem(`${name}: expected one of ${allowed.join(", ")}, got ${JSON.stringify(value)}`);
    return fallback;
  }

  /** Comma- (or newline-) separated list; empty items are dropped. */
  list(name: string, fallback: readonly string[] = []): string[] {
    const value = this.raw(name);
    if (value === undefined) return [...fallback];
    return value
      .split(/[,\n]/)
      .map((s) => s.trim())
      .filter((s) => s !== "");
  }

  /**
   * A list where every entry counts (upstreams, proxy prefixes, CIDRs): an empty entry (a stray
   * comma, "a,,b") or the same entry twice is a problem, not silently dropped, since it usually
   * means a value was lost while the list was edited.
   */
  entries(name: string, fallback: readonly string[] = [], same: (entry: string) => string = (e) => e): string[] {
    const value = this.raw(name);
    if (value === undefined) return [...fallback];
    const items = value.split(/[,\n]/).map((s) => s.trim());
    if (items.some((s) => s === "")) this.problem(`${name}: has an empty entry (a stray comma or blank line?)`);
    const seen = new Set<string>();
    const kept: string[] = [];
    for (const item of items) {
      if (item === "") continue;
      const key = same(item);
      if (seen.has(key)) {
        this.problem(`${name}: lists ${JSON.stringify(item)} more than once`);
        continue;
      }
      seen.add(key);
      kept.push(item);
    }
    return kept;
  }

  url(name: string, fallback: string): URL {
    const value = this.raw(name) ?? fallback;
    return parseHttpUrl(value, name, (m) => this.problem(m)) ?? new URL(fallback);
  }
}

export function parseHttpUrl(value: string, name: string, report: (m: string) => void): URL | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    report(`${name}: not a valid URL: ${JSON.stringify(value)}`);
    return undefined;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    report(`${name}: must be an http:// or https:// URL, got ${JSON.stringify(value)}`);
    return undefined;
  }
  if (url.username || url.password) {
    report(`${name}: credentials in the URL are not allowed`);
    return undefined;
  }
  if (url.search || url.hash) {
    report(`${name}: must not carry a query or fragment`);
    return undefined;
  }
  return url;
}
