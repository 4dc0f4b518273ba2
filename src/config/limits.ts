import { DEFAULT_TRUSTED_PROXY_CIDRS, parseCidr, type Cidr } from "../http/client-ip.ts";
import * as D from "./defaults.ts";
import type { EnvReader } from "./env-reader.ts";

/**
 * Rate limits (token.place API v1 relay spec §11): upstream's variables, defaults and limit syntax,
 * counted per fixed window like upstream's Flask-Limiter/limits "fixed-window" strategy.
 */

/** One quota: `points` requests per `seconds`. */
export interface RateLimit {
  points: number;
  seconds: number;
  /** Upstream's rendering ("60 per 1 hour"), used in the 429 message. */
  text: string;
}

/** The compute-node (control-plane) routes with a quota of their own, by upstream's route names. */
export const CONTROL_PLANE_ROUTES = ["register", "unregister", "poll", "control", "responses", "progress"] as const;
export type ControlPlaneRoute = (typeof CONTROL_PLANE_ROUTES)[number];

/** Upstream's variable per route (note RESPONSE, singular, as upstream spells it). */
export const CONTROL_PLANE_ROUTE_VARS: Record<ControlPlaneRoute, string> = {
  register: "API_RELAY_CONTROL_PLANE_REGISTER_RATE_LIMIT",
  unregister: "API_RELAY_CONTROL_PLANE_UNREGISTER_RATE_LIMIT",
  poll: "API_RELAY_CONTROL_PLANE_POLL_RATE_LIMIT",
  control: "API_RELAY_CONTROL_PLANE_CONTROL_RATE_LIMIT",
  responses: "API_RELAY_CONTROL_PLANE_RESPONSE_RATE_LIMIT",
  progress: "API_RELAY_CONTROL_PLANE_PROGRESS_RATE_LIMIT",
};

/** Which control-plane quota a route path draws on (the /unregister alias shares servers/unregister's). */
export const CONTROL_PLANE_ROUTE_BY_PATH: Readonly<Record<string, ControlPlaneRoute>> = {
  "/api/v1/relay/servers/register": "register",
  "/api/v1/relay/servers/unregister": "unregister",
  "/unregister": "unregister",
  "/api/v1/relay/servers/poll": "poll",
  "/api/v1/relay/servers/control": "control",
  "/api/v1/relay/responses": "responses",
  "/api/v1/relay/progress": "progress",
};

export interface LimitsConfig {
  /** RELAY_RATE_LIMITS: off turns the public and control-plane quotas off (auth failures stay limited). */
  enabled: boolean;
  /** API_RATE_LIMIT + API_DAILY_QUOTA: each is a bucket per client address per public route. */
  public: RateLimit[];
  /** Per route, per node identity (node key, or a response's client key). */
  controlPlane: Record<ControlPlaneRoute, RateLimit>;
  /** Per route, per client address, on every control-plane route. */
  controlPlaneIp: RateLimit;
  /** Failed registration-token attempts per client address, over all node routes. */
  authFailures: RateLimit;
  /** Proxies whose X-Forwarded-For is believed (empty unless RELAY_PROXY_TRUST_FORWARDED=true). */
  trustedProxies: Cidr[];
}

const GRANULARITY_SECONDS: Record<string, number> = {
  second: 1,
  minute: 60,
  hour: 3_600,
  day: 86_400,
  // As upstream's limits library: a month is 30 days, a year 12 of them.
  month: 2_592_000,
  year: 31_104_000,
};

const ONE_LIMIT = /^\s*(\d+)\s*(?:\/|per)\s*(\d+)?\s*(second|minute|hour|day|month|year)s?\s*$/i;

/**
 * Parses upstream's limit strings (Python `limits` syntax): `60/hour`, `60 per hour`,
 * `10 per 5 minutes`, `1000/day`, several joined by `,` `;` or `|`. Returns the limits, or a
 * message saying what is wrong. Unlike upstream, zero counts and zero multiples are refused.
 */
export function parseRateLimits(text: string): RateLimit[] | string {
  const limits: RateLimit[] = [];
  for (const part of text.split(/[,;|]/)) {
    const m = ONE_LIMIT.exec(part);
    if (!m) return `expected a limit like "60/hour", "10 per minute" or "1000/day", got ${JSON.stringify(text)}`;
    const points = Number(m[1]);
    const multiples = m[2] === undefined ? 1 : Number(m[2]);
    const unit = m[3]!.toLowerCase();
    if (points < 1 || !Number.isSafeInteger(points)) return `the count must be at least 1, got ${JSON.stringify(part.trim())}`;
    if (multiples < 1 || !Number.isSafeInteger(multiples)) return `the window must be at least one ${unit}, got ${JSON.stringify(part.trim())}`;
    const seconds = multiples * GRANULARITY_SECONDS[unit]!;
    // Counters are kept at most a year (and Redis expiries are 32-bit seconds on old servers).
    if (seconds > GRANULARITY_SECONDS.year!) return `the window must not exceed a year, got ${JSON.stringify(part.trim())}`;
    limits.push({ points, seconds, text: `${points} per ${multiples} ${unit}` });
  }
  return limits;
}

export function loadLimitsConfig(r: EnvReader, opts: { trustForwarded: boolean }): LimitsConfig {
  const many = (name: string, fallback: string): RateLimit[] => {
    if (r.isBlank(name)) r.problem(`${name}: set but empty`);
    const parsed = parseRateLimits(r.string(name, fallback));
    if (typeof parsed === "string") {
      r.problem(`${name}: ${parsed}`);
      return parseRateLimits(fallback) as RateLimit[];
    }
    return parsed;
  };
  const one = (name: string, fallback: string): RateLimit => {
    const parsed = many(name, fallback);
    // Upstream silently keeps only the first of several here: say so instead of guessing.
    if (parsed.length > 1) r.problem(`${name}: takes one limit, got ${parsed.length} (upstream would use only the first)`);
    return parsed[0]!;
  };

  const enabled = r.bool("RELAY_RATE_LIMITS", true);
  const all = r.raw("API_RELAY_CONTROL_PLANE_RATE_LIMIT") === undefined ? undefined : one("API_RELAY_CONTROL_PLANE_RATE_LIMIT", "1/hour");
  const controlPlane = {} as Record<ControlPlaneRoute, RateLimit>;
  for (const route of CONTROL_PLANE_ROUTES) {
    const name = CONTROL_PLANE_ROUTE_VARS[route];
    const fallback = D.DEFAULT_CONTROL_PLANE_RATE_LIMITS[route];
    controlPlane[route] = r.raw(name) !== undefined || all === undefined ? one(name, fallback) : all;
  }

  return {
    enabled,
    public: [...many("API_RATE_LIMIT", D.DEFAULT_API_RATE_LIMIT), ...many("API_DAILY_QUOTA", D.DEFAULT_API_DAILY_QUOTA)],
    controlPlane,
    controlPlaneIp: one("API_RELAY_CONTROL_PLANE_IP_RATE_LIMIT", D.DEFAULT_CONTROL_PLANE_IP_RATE_LIMIT),
    authFailures: one("RELAY_AUTH_FAILURE_LIMIT", D.DEFAULT_AUTH_FAILURE_LIMIT),
    trustedProxies: loadTrustedProxies(r, opts.trustForwarded),
  };
}

function loadTrustedProxies(r: EnvReader, trustForwarded: boolean): Cidr[] {
  const name = "RELAY_TRUSTED_PROXY_CIDRS";
  if (r.isBlank(name)) {
    // Empty would mean "trust forwarding from nobody": a quiet no-op nobody means to configure.
    r.problem(`${name}: set but empty; unset it for the default (${DEFAULT_TRUSTED_PROXY_CIDRS.join(",")})`);
    return [];
  }
  const listed = r.entries(name);
  if (!trustForwarded) {
    if (r.raw(name) !== undefined) r.problem(`${name} is set but RELAY_PROXY_TRUST_FORWARDED is not true, so no forwarded address is ever read`);
    return [];
  }
  const texts = listed.length > 0 ? listed : [...DEFAULT_TRUSTED_PROXY_CIDRS];
  const cidrs: Cidr[] = [];
  for (const t of texts) {
    const c = parseCidr(t);
    if (c) cidrs.push(c);
    else r.problem(`${name}: ${JSON.stringify(t)} is not an IPv4 or IPv6 address or CIDR (like 10.0.0.0/8 or fc00::/7)`);
  }
  return cidrs;
}

/** The printable view for --check-config. */
export function describeLimits(c: LimitsConfig): Record<string, unknown> {
  const text = (l: RateLimit) => l.text;
  return {
    enabled: c.enabled,
    public: c.public.map(text),
    controlPlane: Object.fromEntries(Object.entries(c.controlPlane).map(([k, v]) => [k, v.text])),
    controlPlaneIp: c.controlPlaneIp.text,
    authFailures: c.authFailures.text,
    trustedProxies: c.trustedProxies.map((x) => x.text),
  };
}
