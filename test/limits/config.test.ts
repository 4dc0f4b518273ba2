/**
 * Rate-limit settings (src/config/limits.ts): upstream's variables, defaults and limit syntax
 * (Python `limits`: "60/hour", "10 per minute", several joined by , ; |); anything else stops the
 * relay with exit 2 instead of quietly falling back as upstream does.
 */
import { describe, expect, test } from "bun:test";
import { loadConfig } from "../../src/config/index.ts";
import { parseRateLimits } from "../../src/config/limits.ts";
import { BUN, ROOT, run } from "../helpers/spawn.ts";

const limits = (text: string) => {
  const parsed = parseRateLimits(text);
  if (typeof parsed === "string") throw new Error(parsed);
  return parsed.map((l) => [l.points, l.seconds, l.text]);
};

describe("limit syntax (upstream's limits library)", () => {
  test("the forms upstream accepts", () => {
    expect(limits("60/hour")).toEqual([[60, 3600, "60 per 1 hour"]]);
    expect(limits("1000/day")).toEqual([[1000, 86_400, "1000 per 1 day"]]);
    expect(limits("10 per minute")).toEqual([[10, 60, "10 per 1 minute"]]);
    expect(limits("10 per 5 minutes")).toEqual([[10, 300, "10 per 5 minute"]]);
    expect(limits("3/second")).toEqual([[3, 1, "3 per 1 second"]]);
    expect(limits(" 5 / 2 Hours ")).toEqual([[5, 7200, "5 per 2 hour"]]);
    expect(limits("7 PER MONTH")).toEqual([[7, 2_592_000, "7 per 1 month"]]);
    expect(limits("1/year")).toEqual([[1, 31_104_000, "1 per 1 year"]]);
    expect(limits("10/minute;100/hour")).toEqual([[10, 60, "10 per 1 minute"], [100, 3600, "100 per 1 hour"]]);
    expect(limits("10/minute, 100/hour | 1000/day").length).toBe(3);
  });

  test("everything else is refused with a message", () => {
    for (const bad of ["", "60", "hour", "60 hour", "60/fortnight", "-1/hour", "1.5/hour", "60/hour;", "0/hour", "60/0 hours", "2/2 years", "60/hour/day"]) {
      expect(typeof parseRateLimits(bad)).toBe("string");
    }
  });
});

describe("settings", () => {
  test("defaults are upstream's", () => {
    const { config, problems } = loadConfig({});
    expect(problems).toEqual([]);
    const l = config.limits;
    expect(l.enabled).toBe(true);
    expect(l.public.map((x) => x.text)).toEqual(["60 per 1 hour", "1000 per 1 day"]);
    expect(Object.fromEntries(Object.entries(l.controlPlane).map(([k, v]) => [k, v.text]))).toEqual({
      register: "240 per 1 hour",
      unregister: "240 per 1 hour",
      poll: "1200 per 1 hour",
      control: "1200 per 1 hour",
      responses: "1200 per 1 hour",
      progress: "7200 per 1 hour",
    });
    expect(l.controlPlaneIp.text).toBe("10000 per 1 hour");
    expect(l.authFailures.text).toBe("10 per 1 minute");
    expect(l.trustedProxies).toEqual([]);
  });

  test("API_RELAY_CONTROL_PLANE_RATE_LIMIT sets every route; a route's own variable wins", () => {
    const { config, problems } = loadConfig({ API_RELAY_CONTROL_PLANE_RATE_LIMIT: "50/minute", API_RELAY_CONTROL_PLANE_RESPONSE_RATE_LIMIT: "5/second" });
    expect(problems).toEqual([]);
    const texts = Object.fromEntries(Object.entries(config.limits.controlPlane).map(([k, v]) => [k, v.text]));
    expect(texts).toEqual({
      register: "50 per 1 minute",
      unregister: "50 per 1 minute",
      poll: "50 per 1 minute",
      control: "50 per 1 minute",
      responses: "5 per 1 second",
      progress: "50 per 1 minute",
    });
  });

  test("public quotas may list several limits each", () => {
    const { config } = loadConfig({ API_RATE_LIMIT: "5/minute;30/hour", API_DAILY_QUOTA: "100 per day" });
    expect(config.limits.public.map((x) => x.text)).toEqual(["5 per 1 minute", "30 per 1 hour", "100 per 1 day"]);
  });

  test("bad values are problems (exit 2), never a silent default", () => {
    const { problems } = loadConfig({
      API_RATE_LIMIT: "sixty an hour",
      API_DAILY_QUOTA: " ",
      API_RELAY_CONTROL_PLANE_POLL_RATE_LIMIT: "10/minute;100/hour",
      API_RELAY_CONTROL_PLANE_IP_RATE_LIMIT: "0/hour",
      RELAY_AUTH_FAILURE_LIMIT: "10",
      RELAY_RATE_LIMITS: "maybe",
    });
    const text = problems.join("\n");
    for (const name of ["API_RATE_LIMIT", "API_DAILY_QUOTA", "API_RELAY_CONTROL_PLANE_POLL_RATE_LIMIT", "API_RELAY_CONTROL_PLANE_IP_RATE_LIMIT", "RELAY_AUTH_FAILURE_LIMIT", "RELAY_RATE_LIMITS"]) {
      expect(text).toContain(name);
    }
  });

  test("trusted proxies: the private ranges by default once forwarding is trusted; a list narrows them", () => {
    const on = loadConfig({ RELAY_PROXY_TRUST_FORWARDED: "true" });
    expect(on.problems).toEqual([]);
    expect(on.config.limits.trustedProxies.map((c) => c.text)).toEqual(["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]);
    const narrow = loadConfig({ RELAY_PROXY_TRUST_FORWARDED: "true", RELAY_TRUSTED_PROXY_CIDRS: "10.42.0.0/16, 2001:db8::/32,192.0.2.1" });
    expect(narrow.problems).toEqual([]);
    expect(narrow.config.limits.trustedProxies.map((c) => c.text)).toEqual(["10.42.0.0/16", "2001:db8::/32", "192.0.2.1"]);
  });

  test("trusted proxies: refused when empty, malformed, or set while forwarding is not trusted", () => {
    expect(loadConfig({ RELAY_PROXY_TRUST_FORWARDED: "true", RELAY_TRUSTED_PROXY_CIDRS: "" }).problems.join()).toContain("RELAY_TRUSTED_PROXY_CIDRS: set but empty");
    expect(loadConfig({ RELAY_PROXY_TRUST_FORWARDED: "true", RELAY_TRUSTED_PROXY_CIDRS: "10.0.0.0/8,traefik" }).problems.join()).toContain('"traefik"');
    expect(loadConfig({ RELAY_PROXY_TRUST_FORWARDED: "true", RELAY_TRUSTED_PROXY_CIDRS: "10.0.0.0/33" }).problems.length).toBe(1);
    expect(loadConfig({ RELAY_TRUSTED_PROXY_CIDRS: "10.0.0.0/8" }).problems.join()).toContain("RELAY_PROXY_TRUST_FORWARDED is not true");
  });

  test("--check-config exits 2 on an invalid limit and prints the effective limits otherwise", async () => {
    const bad = await run([BUN, "run", `${ROOT}src/main.ts`, "--check-config"], { API_RATE_LIMIT: "lots" });
    expect(bad.code).toBe(2);
    expect(bad.stderr + bad.stdout).toContain("API_RATE_LIMIT");
    const good = await run([BUN, "run", `${ROOT}src/main.ts`, "--check-config"], { API_RATE_LIMIT: "30/hour", RELAY_PROXY_TRUST_FORWARDED: "true" });
    expect(good.code).toBe(0);
    expect(good.stdout).toContain("30 per 1 hour");
    expect(good.stdout).toContain("fc00::/7");
  }, 30_000);
});
