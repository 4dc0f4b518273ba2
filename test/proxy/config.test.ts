import { describe, expect, test } from "bun:test";
import { loadConfig } from "../../src/config/index.ts";

describe("proxy settings", () => {
  test("defaults", () => {
    const { config, problems } = loadConfig({});
    expect(problems).toEqual([]);
    expect(config.proxy).toMatchObject({ prefixes: ["/api/", "/v1/"], trustForwarded: false, requireUpstreamHealth: false, healthPath: "/health" });
    expect(config.proxy.upstreams.map((u) => u.href)).toEqual(["http://gpu-server:3000/"]);
  });

  test("a prefix may cover relay routes (they win), but one inside them proxies nothing and is refused", () => {
    expect(loadConfig({ RELAY_PROXY_PREFIXES: "/api/,/stream/" }).problems).toEqual([]);
    for (const prefix of ["/api/v1/relay/", "/stream/source/", "/api/v1/meta/"]) {
      const { problems } = loadConfig({ RELAY_PROXY_PREFIXES: prefix });
      expect(problems.join("\n")).toContain("lies inside the relay's own routes");
    }
  });

  test("RELAY_PROXY_TRUST_FORWARDED and the upstream list are read", () => {
    const { config, problems } = loadConfig({ RELAY_PROXY_TRUST_FORWARDED: "true", TOKEN_PLACE_RELAY_UPSTREAMS: "http://a:1, http://b:2" });
    expect(problems).toEqual([]);
    expect(config.proxy.trustForwarded).toBe(true);
    expect(config.proxy.upstreams.map((u) => u.host)).toEqual(["a:1", "b:2"]);
  });
});
