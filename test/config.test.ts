import { describe, expect, test } from "bun:test";
import { DEFAULT_PORT, describeConfig, loadConfig } from "../src/config/index.ts";

describe("config defaults", () => {
  test("an empty environment is valid and uses the embedded defaults", () => {
    const { config, problems, unknown } = loadConfig({});
    expect(problems).toEqual([]);
    expect(unknown).toEqual([]);
    expect(config.host).toBe("0.0.0.0");
    expect(config.port).toBe(DEFAULT_PORT);
    expect(config.port).toBe(5010);
    expect(config.upstreamUrl.href).toBe("http://gpu-server:3000/");
    expect(config.gpuHost).toBe("gpu-server");
    expect(config.gpuPort).toBe(3000);
    expect(config.serverTokens).toEqual([]);
    expect(config.broker.longPollMs).toBeLessThan(10_000);
    expect(config.proxy.prefixes).toEqual(["/api/", "/v1/"]);
  });
});

describe("upstream and GPU host", () => {
  test("explicit TOKENPLACE_GPU_HOST/PORT win over the URL's host and port", () => {
    const { config, problems } = loadConfig({
      TOKENPLACE_RELAY_UPSTREAM_URL: "https://gpu.example.internal:8443",
      TOKENPLACE_GPU_HOST: "10.0.0.42",
      TOKENPLACE_GPU_PORT: "5000",
    });
    expect(problems).toEqual([]);
    expect(config.upstreamUrl.href).toBe("https://10.0.0.42:5000/");
    expect(config.gpuHost).toBe("10.0.0.42");
    expect(config.gpuPort).toBe(5000);
  });

  test("the URL's host is what readiness resolves when no override is set", () => {
    const { config } = loadConfig({ TOKENPLACE_RELAY_UPSTREAM_URL: "http://workstation.lan:3000" });
    expect(config.gpuHost).toBe("workstation.lan");
    expect(config.gpuPort).toBe(3000);
  });

  test("the default scheme port is used when the URL has none", () => {
    expect(loadConfig({ TOKENPLACE_RELAY_UPSTREAM_URL: "https://gpu" }).config.gpuPort).toBe(443);
  });
});

describe("tokens", () => {
  test("single token and rotation list are merged and de-duplicated", () => {
    const { config, problems } = loadConfig({
      TOKEN_PLACE_RELAY_SERVER_TOKEN: "aaaaaaaaaaaaaaaa1",
      TOKEN_PLACE_RELAY_SERVER_TOKENS: " bbbbbbbbbbbbbbbb2 , aaaaaaaaaaaaaaaa1,,",
    });
    expect(problems).toEqual([]);
    expect(config.serverTokens).toEqual(["aaaaaaaaaaaaaaaa1", "bbbbbbbbbbbbbbbb2"]);
  });

  test("short tokens are refused", () => {
    expect(loadConfig({ TOKEN_PLACE_RELAY_SERVER_TOKEN: "short" }).problems.join()).toContain("at least 16 characters");
  });
});

describe("validation collects every problem at once", () => {
  test("several bad values give several messages naming each variable", () => {
    const { problems } = loadConfig({
      RELAY_PORT: "seventy",
      LOG_LEVEL: "loud",
      TOKENPLACE_RELAY_UPSTREAM_URL: "ftp://gpu",
      RELAY_LONG_POLL_MS: "20000",
      RELAY_MAX_QUEUE_DEPTH: "0",
      TOKENPLACE_RELAY_ONLY: "maybe",
      RELAY_PROXY_PREFIXES: "api,/v1/../x/",
      TOKEN_PLACE_RELAY_UPSTREAMS: "http://ok:1,notaurl",
    });
    const text = problems.join("\n");
    for (const name of [
      "RELAY_PORT", "LOG_LEVEL", "TOKENPLACE_RELAY_UPSTREAM_URL", "RELAY_LONG_POLL_MS", "RELAY_MAX_QUEUE_DEPTH",
      "TOKENPLACE_RELAY_ONLY", "RELAY_PROXY_PREFIXES", "TOKEN_PLACE_RELAY_UPSTREAMS",
    ]) {
      expect(text).toContain(name);
    }
    expect(problems.length).toBeGreaterThanOrEqual(9);
  });

  test("numbers must be integers within range", () => {
    expect(loadConfig({ RELAY_PORT: "70000" }).problems).toEqual(["RELAY_PORT: must be <= 65535, got 70000"]);
    expect(loadConfig({ RELAY_PORT: "1.5" }).problems[0]).toContain("expected an integer");
    expect(loadConfig({ RELAY_MAX_BODY_BYTES: "12" }).problems[0]).toContain(">= 1024");
  });

  test("cross-field rules: hold shorter than stale timeout and idle timeout, batch within queue", () => {
    const text = loadConfig({
      RELAY_LONG_POLL_MS: "8000",
      RELAY_NODE_STALE_MS: "5000",
      RELAY_IDLE_TIMEOUT_SECONDS: "5",
      RELAY_MAX_BATCH_SIZE: "10",
      RELAY_MAX_QUEUE_DEPTH: "4",
    }).problems.join("\n");
    expect(text).toContain("RELAY_LONG_POLL_MS must be shorter than RELAY_NODE_STALE_MS");
    expect(text).toContain("RELAY_IDLE_TIMEOUT_SECONDS must be longer than RELAY_LONG_POLL_MS");
    expect(text).toContain("RELAY_MAX_BATCH_SIZE must not exceed RELAY_MAX_QUEUE_DEPTH");
  });

  test("credentials in the upstream URL are refused (they would be logged and forwarded)", () => {
    expect(loadConfig({ TOKENPLACE_RELAY_UPSTREAM_URL: "http://u:p@gpu:3000" }).problems[0]).toContain("credentials");
  });

  test("a GPU host with URL syntax in it is refused", () => {
    expect(loadConfig({ TOKENPLACE_GPU_HOST: "evil.com/x" }).problems[0]).toContain("TOKENPLACE_GPU_HOST");
  });

  test("booleans accept the usual spellings", () => {
    for (const v of ["true", "1", "yes", "ON"]) expect(loadConfig({ TOKENPLACE_RELAY_ONLY: v }).config.relayOnly).toBe(true);
    for (const v of ["false", "0", "no", "off"]) expect(loadConfig({ TOKENPLACE_RELAY_ONLY: v }).config.relayOnly).toBe(false);
  });
});

describe("unknown settings", () => {
  const only = (env: Record<string, string>) => {
    const r = loadConfig(env);
    return { problems: r.problems, unknown: r.unknown };
  };

  test("a misspelt name is a problem naming the setting it probably meant, never its value", () => {
    const cases: [string, string][] = [
      ["RELAY_LONGPOLL_MS", "RELAY_LONG_POLL_MS"],
      ["TOKENPLACE_GPU_HOTS", "TOKENPLACE_GPU_HOST"],
      // The worst one: the relay would otherwise start with registration open.
      ["TOKENPLACE_RELAY_SERVER_TOKEN", "TOKEN_PLACE_RELAY_SERVER_TOKEN"],
      ["API_RATE_LIMT", "API_RATE_LIMIT"],
      ["API_DAILY_QUOTAS", "API_DAILY_QUOTA"],
      ["API_RELAY_CONTROL_PLANE_RESPONSES_RATE_LIMIT", "API_RELAY_CONTROL_PLANE_RESPONSE_RATE_LIMIT"],
      // Without the TOKEN_PLACE_ prefix, words in another order, a word left off, another case.
      ["API_V1_RELAY_POLL_WAIT_SECONDS", "TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS"],
      ["RELAY_BYTES_MAX_BODY", "RELAY_MAX_BODY_BYTES"],
      ["RELAY_MAX_BODY", "RELAY_MAX_BODY_BYTES"],
      ["relay_port", "RELAY_PORT"],
    ];
    for (const [typo, meant] of cases) {
      const { problems, unknown } = only({ [typo]: "secret-looking-value-0123456789" });
      expect(problems).toHaveLength(1);
      expect(problems[0]).toStartWith(`${typo}: not a relay setting; did you mean ${meant}?`);
      expect(problems[0]).not.toContain("secret-looking-value");
      expect(unknown).toEqual([]);
    }
  });

  test("a misspelt token name is a problem even beside the right one", () => {
    const { problems } = only({ TOKEN_PLACE_RELAY_SERVER_TOKEN: "a-long-registration-token", TOKENPLACE_RELAY_SERVER_TOKEN: "x" });
    expect(problems).toEqual(["TOKENPLACE_RELAY_SERVER_TOKEN: not a relay setting; did you mean TOKEN_PLACE_RELAY_SERVER_TOKEN?"]);
  });

  test("a name with nothing close is still a problem; a control-plane one lists the routes", () => {
    expect(only({ RELAY_TYPO_SETTING: "1" }).problems).toEqual([
      'RELAY_TYPO_SETTING: not a relay setting (typo?); the settings are listed in README "Configuration"',
    ]);
    expect(only({ API_V1_ENABLED: "false" }).problems.join()).toContain("API_V1_ENABLED: not a relay setting");
    const route = only({ API_RELAY_CONTROL_PLANE_SUBMIT_RATE_LIMIT: "1/hour" }).problems.join();
    expect(route).toContain("API_RELAY_CONTROL_PLANE_SUBMIT_RATE_LIMIT: not a relay setting");
    expect(route).toContain("REGISTER, UNREGISTER, POLL, CONTROL, RESPONSE, PROGRESS");
  });

  test("upstream settings this relay does not have say what to use instead", () => {
    expect(only({ TOKEN_PLACE_RELAY_SERVER_TTL_SECONDS: "30" }).problems.join()).toContain("use RELAY_NODE_STALE_MS");
    expect(only({ TOKENPLACE_RATE_LIMIT_STORAGE_URI: "redis://x" }).problems.join()).toContain("TOKENPLACE_RELAY_STATE_BACKEND");
  });

  test("other programs' names, the project's tooling and the operator-token aliases are not problems", () => {
    const env = {
      HOME: "/root",
      API_KEY: "x",
      API_URL: "http://x",
      APIV1: "x",
      TOKENPLACE_ENV: "staging",
      TOKENPLACE_KUBE_CONTEXT: "k",
      TOKENPLACE_BENCH_RELAY_BIN: "/tmp/x",
      RELAY_URL: "http://127.0.0.1:5010",
      RELAY_BUILD_REVISION: "abc",
      TOKEN_PLACE_KEY_ROTATION_TOKEN: "an-operator-token-0123",
      PUBLIC_KEY_ROTATION_TOKEN: "another-operator-token-0123",
    };
    expect(only(env)).toEqual({ problems: [], unknown: [] });
  });

  test("service-link variables nobody wrote are only warned about", () => {
    const env = {
      TOKENPLACE_RELAY_SERVICE_HOST: "10.0.0.1",
      TOKENPLACE_RELAY_SERVICE_PORT_HTTP: "5010",
      TOKENPLACE_RELAY_PORT: "tcp://10.0.0.1:5010",
      TOKENPLACE_RELAY_PORT_5010_TCP_ADDR: "10.0.0.1",
    };
    expect(only(env)).toEqual({ problems: [], unknown: Object.keys(env).sort() });
    // A hand-written _PORT that is not a service link is a typo like any other.
    expect(only({ TOKENPLACE_RELAY_PORT: "5010" }).problems.join()).toContain("TOKENPLACE_RELAY_PORT: not a relay setting; did you mean RELAY_PORT?");
  });
});

describe("lists, relay-only mode and the listen address", () => {
  test("an empty or repeated upstream is a problem", () => {
    expect(loadConfig({ TOKEN_PLACE_RELAY_UPSTREAMS: "http://a:1,,http://b:2" }).problems).toEqual([
      "TOKEN_PLACE_RELAY_UPSTREAMS: has an empty entry (a stray comma or blank line?)",
    ]);
    // The same URL spelt twice is one upstream listed twice.
    expect(loadConfig({ TOKEN_PLACE_RELAY_UPSTREAMS: "http://a:1,http://A:1/" }).problems).toEqual([
      'TOKEN_PLACE_RELAY_UPSTREAMS: lists "http://A:1/" more than once',
    ]);
    const ok = loadConfig({ TOKEN_PLACE_RELAY_UPSTREAMS: "http://a:1, http://b:2" });
    expect(ok.problems).toEqual([]);
    expect(ok.config.proxy.upstreams.map((u) => u.href)).toEqual(["http://a:1/", "http://b:2/"]);
  });

  test("proxy prefixes and trusted proxies refuse empty and repeated entries too", () => {
    expect(loadConfig({ RELAY_PROXY_PREFIXES: "/api/,/api/" }).problems.join()).toContain('RELAY_PROXY_PREFIXES: lists "/api/" more than once');
    expect(loadConfig({ RELAY_PROXY_PREFIXES: "/api/,,/v1/" }).problems.join()).toContain("RELAY_PROXY_PREFIXES: has an empty entry");
    const cidrs = loadConfig({ RELAY_PROXY_TRUST_FORWARDED: "true", RELAY_TRUSTED_PROXY_CIDRS: "10.0.0.0/8,,10.0.0.0/8" }).problems.join();
    expect(cidrs).toContain("RELAY_TRUSTED_PROXY_CIDRS: has an empty entry");
    expect(cidrs).toContain('RELAY_TRUSTED_PROXY_CIDRS: lists "10.0.0.0/8" more than once');
  });

  test("with TOKENPLACE_RELAY_ONLY=true every proxy setting is a problem, the forwarding trust is not", () => {
    const env = {
      TOKENPLACE_RELAY_ONLY: "true",
      RELAY_PROXY_PREFIXES: "/api/",
      TOKENPLACE_RELAY_UPSTREAM_URL: "http://gpu:3000",
      TOKEN_PLACE_RELAY_UPSTREAMS: "http://gpu:3000",
      RELAY_UPSTREAM_EJECT_MS: "1000",
    };
    const { problems } = loadConfig(env);
    expect(problems).toHaveLength(4);
    for (const name of ["RELAY_PROXY_PREFIXES", "TOKENPLACE_RELAY_UPSTREAM_URL", "TOKEN_PLACE_RELAY_UPSTREAMS", "RELAY_UPSTREAM_EJECT_MS"]) {
      expect(problems).toContain(`${name} is set but TOKENPLACE_RELAY_ONLY is true, so nothing is proxied; unset one of them`);
    }
    // Rate limits read it to name the client behind a trusted proxy.
    expect(loadConfig({ TOKENPLACE_RELAY_ONLY: "true", RELAY_PROXY_TRUST_FORWARDED: "true" }).problems).toEqual([]);
    expect(loadConfig({ TOKENPLACE_RELAY_ONLY: "false", RELAY_PROXY_PREFIXES: "/api/" }).problems).toEqual([]);
  });

  test("RELAY_HOST must be an IP literal or an RFC 1123 host name", () => {
    for (const host of ["0.0.0.0", "127.0.0.1", "::", "::1", "fe80::1", "localhost", "relay-0.relay.svc.cluster.local", "a.b.", "1host"]) {
      expect(loadConfig({ RELAY_HOST: host }).problems).toEqual([]);
    }
    for (const host of ["not_a_host", "not a host", "[::1]", "999.1.1.1", "1.2.3", "-relay", "relay-", "a..b", "x".repeat(64), "http://relay"]) {
      expect(loadConfig({ RELAY_HOST: host }).problems).toEqual([
        `RELAY_HOST: not an IP address or host name to listen on: ${JSON.stringify(host)} (e.g. 0.0.0.0, ::, 127.0.0.1 or localhost)`,
      ]);
    }
  });
});

describe("state backend", () => {
  test("memory is the default; redis needs a well-formed URL, and Redis settings without it are refused", () => {
    expect(loadConfig({ TOKENPLACE_RELAY_STATE_BACKEND: "memory" }).problems).toEqual([]);
    const redis = loadConfig({ TOKENPLACE_RELAY_STATE_BACKEND: "redis", TOKENPLACE_RELAY_REDIS_URL: "rediss://relay:s3cret@valkey:6379/2" });
    expect(redis.problems).toEqual([]);
    expect(redis.config.state).toEqual({ backend: "redis", redis: { url: "rediss://relay:s3cret@valkey:6379/2", keyPrefix: "tokenplace-relay:", commandTimeoutMs: 2000 } });
    expect(loadConfig({ TOKENPLACE_RELAY_REDIS_URL: "redis://r:6379" }).problems.join()).toContain("not redis");
    expect(loadConfig({ TOKENPLACE_RELAY_STATE_BACKEND: "redis" }).problems.join()).toContain("TOKENPLACE_RELAY_REDIS_URL: required");
  });

  test.each([
    ["http://valkey:6379", "scheme must be redis:// or rediss://"],
    ["redis://valkey:6379/x", "database must be a number"],
    ["redis://:pw@", "not a valid URL"],
    ["redis://valkey:6379/0?timeout=1", "must not carry a query"],
  ])("a malformed URL %s is refused without echoing it", (url, problem) => {
    const { problems } = loadConfig({ TOKENPLACE_RELAY_STATE_BACKEND: "redis", TOKENPLACE_RELAY_REDIS_URL: url });
    expect(problems.join()).toContain(problem);
    if (url.includes("pw")) expect(problems.join()).not.toContain("pw");
  });

  test("key prefix and command timeout are validated; the password never shows in the printable config", () => {
    const bad = loadConfig({ TOKENPLACE_RELAY_STATE_BACKEND: "redis", TOKENPLACE_RELAY_REDIS_URL: "redis://valkey", TOKENPLACE_RELAY_REDIS_KEY_PREFIX: "{tp}", RELAY_REDIS_COMMAND_TIMEOUT_MS: "10" });
    expect(bad.problems.join("\n")).toContain("TOKENPLACE_RELAY_REDIS_KEY_PREFIX");
    expect(bad.problems.join("\n")).toContain("RELAY_REDIS_COMMAND_TIMEOUT_MS");
    const good = loadConfig({ TOKENPLACE_RELAY_STATE_BACKEND: "redis", TOKENPLACE_RELAY_REDIS_URL: "redis://relay:hunter2-secret@valkey:6379/0" });
    const text = JSON.stringify(describeConfig(good.config));
    expect(text).not.toContain("hunter2-secret");
    expect(text).toContain("redis://relay:redacted@valkey:6379/0");
  });
});

describe("settings that would misbehave quietly are refused", () => {
  test("a token variable set but empty never means open registration", () => {
    for (const env of [{ TOKEN_PLACE_RELAY_SERVER_TOKEN: "" }, { TOKEN_PLACE_RELAY_SERVER_TOKEN: "  " }, { TOKEN_PLACE_RELAY_SERVER_TOKENS: "" }]) {
      expect(loadConfig(env).problems.join()).toContain("set but empty");
    }
    expect(loadConfig({ TOKEN_PLACE_RELAY_SERVER_TOKENS: " , ," }).problems.join()).toContain("lists no token");
  });

  test("a GPU host the URL parser would silently ignore is refused; IPv6 literals work", () => {
    for (const bad of ["gpu|box", "gpu<box", "a b", "x/y", "u@h"]) {
      expect(loadConfig({ TOKENPLACE_GPU_HOST: bad }).problems.join()).toContain("TOKENPLACE_GPU_HOST");
    }
    const v6 = loadConfig({ TOKENPLACE_GPU_HOST: "fd00::1", TOKENPLACE_GPU_PORT: "3000" });
    expect(v6.problems).toEqual([]);
    expect(v6.config.upstreamUrl.href).toBe("http://[fd00::1]:3000/");
    expect(v6.config.gpuHost).toBe("fd00::1");
  });

  test("holds shorter than a second, a zero pace and a pace beyond the stale timeout are refused", () => {
    expect(loadConfig({ RELAY_LONG_POLL_MS: "1" }).problems.join()).toContain("must be 0 (off) or at least 1000");
    expect(loadConfig({ RELAY_LONG_POLL_MS: "0" }).problems).toEqual([]);
    expect(loadConfig({ RELAY_NEXT_PING_SECONDS: "0" }).problems.join()).toContain("RELAY_NEXT_PING_SECONDS");
    expect(loadConfig({ RELAY_NEXT_PING_SECONDS: "60" }).problems.join()).toContain("shorter than RELAY_NODE_STALE_MS");
  });

  test("an upstream list that leaves out an explicitly set primary upstream is refused", () => {
    const bad = loadConfig({ TOKENPLACE_RELAY_UPSTREAM_URL: "http://a:3000", TOKEN_PLACE_RELAY_UPSTREAMS: "http://b:3000,http://c:3000" });
    expect(bad.problems.join()).toContain("does not contain the primary upstream");
    expect(loadConfig({ TOKENPLACE_RELAY_UPSTREAM_URL: "http://a:3000", TOKEN_PLACE_RELAY_UPSTREAMS: "http://a:3000,http://b:3000" }).problems).toEqual([]);
    // A list alone replaces the default primary.
    expect(loadConfig({ TOKEN_PLACE_RELAY_UPSTREAMS: "http://b:3000" }).problems).toEqual([]);
  });
});
