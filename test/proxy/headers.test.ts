import { describe, expect, test } from "bun:test";
import { clientResponseHeaders as responseFields, upstreamRequestHeaders as fields, type ForwardInfo } from "../../src/proxy/headers.ts";

/** The field list fetch is given, as the header set fetch builds from it. */
const upstreamRequestHeaders = (inbound: Headers, i: ForwardInfo) => new Headers(fields(inbound, i));
const clientResponseHeaders = (upstream: Headers) => new Headers(responseFields(upstream));

const info = { clientIp: "10.0.0.7", proto: "http", host: "relay.example", requestId: "rid-1", trustForwarded: false };

describe("request headers", () => {
  test("drops hop-by-hop, Connection-named, Host, proxy credentials and relay-only headers", () => {
    const h = upstreamRequestHeaders(
      new Headers({
        Host: "relay.example",
        Connection: "Keep-Alive, X-Named",
        "X-Named": "1",
        "Keep-Alive": "5",
        TE: "trailers",
        Trailer: "X-T",
        Upgrade: "websocket",
        "Proxy-Authorization": "Basic x",
        "X-Relay-Server-Token": "secret-secret-secret",
        "X-Relay-Anything": "1",
        Authorization: "Bearer k",
        Cookie: "a=1",
        Accept: "text/event-stream",
      }),
      info,
    );
    expect([...h.keys()].sort()).toEqual(["accept", "authorization", "cookie", "via", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-request-id"]);
    expect(h.get("x-forwarded-for")).toBe("10.0.0.7");
    expect(h.get("x-request-id")).toBe("rid-1");
  });

  test("untrusted: inbound forwarding claims are replaced by the relay's own view", () => {
    const h = upstreamRequestHeaders(new Headers({ "X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "spoof", Forwarded: "for=1.2.3.4" }), info);
    expect(h.get("x-forwarded-for")).toBe("10.0.0.7");
    expect(h.get("x-forwarded-proto")).toBe("http");
    expect(h.get("x-forwarded-host")).toBe("relay.example");
    expect(h.has("forwarded")).toBe(false);
  });

  test("untrusted: the other names proxies give the client's address or the original URL are not passed on", () => {
    const spoofed = { "X-Real-IP": "1.2.3.4", "X-Forwarded-Port": "443", "X-Forwarded-Prefix": "/admin", "X-Forwarded-Server": "spoof", "X-Original-URL": "/admin", "X-Rewrite-URL": "/admin" };
    const h = upstreamRequestHeaders(new Headers({ ...spoofed, Accept: "text/event-stream" }), info);
    for (const name of Object.keys(spoofed)) expect(h.has(name)).toBe(false);
    expect(h.get("accept")).toBe("text/event-stream");
    // From a trusted ingress they are its own facts, and pass.
    const trusted = upstreamRequestHeaders(new Headers(spoofed), { ...info, trustForwarded: true });
    for (const [name, value] of Object.entries(spoofed)) expect(trusted.get(name)).toBe(value);
  });

  test("trusted (behind an ingress): the chain is extended and the first hop's proto/host kept", () => {
    const h = upstreamRequestHeaders(
      new Headers({ "X-Forwarded-For": "198.51.100.1", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "token.place", Via: "1.1 traefik" }),
      { ...info, trustForwarded: true },
    );
    expect(h.get("x-forwarded-for")).toBe("198.51.100.1, 10.0.0.7");
    expect(h.get("x-forwarded-proto")).toBe("https");
    expect(h.get("x-forwarded-host")).toBe("token.place");
    expect(h.get("via")).toBe("1.1 traefik, 1.1 tokenplace-relay");
  });
});

describe("request header fields", () => {
  test("each field once: repeated inbound forwarding fields are one chain, the relay's own fields appear once", () => {
    const inbound = new Headers();
    inbound.append("X-Forwarded-For", "198.51.100.1");
    inbound.append("X-Forwarded-For", "198.51.100.2");
    inbound.append("Via", "1.1 a");
    inbound.append("X-Request-Id", "client-chosen");
    const list = fields(inbound, { ...info, trustForwarded: true });
    const names = list.map(([name]) => name);
    expect(names.length).toBe(new Set(names).size);
    expect(new Headers(list).get("x-forwarded-for")).toBe("198.51.100.1, 198.51.100.2, 10.0.0.7");
    expect(new Headers(list).get("x-request-id")).toBe("rid-1");
  });

  test("without a known peer: the trusted chain is kept as it came, an untrusted one is not sent", () => {
    const inbound = new Headers({ "X-Forwarded-For": "198.51.100.1" });
    expect(new Headers(fields(inbound, { ...info, clientIp: undefined, trustForwarded: true })).get("x-forwarded-for")).toBe("198.51.100.1");
    expect(new Headers(fields(inbound, { ...info, clientIp: undefined })).has("x-forwarded-for")).toBe(false);
  });
});

describe("response headers", () => {
  test("keeps Content-Encoding, Content-Length and every Set-Cookie; drops hop-by-hop", () => {
    const up = new Headers({ "Content-Encoding": "gzip", "Content-Length": "47", Connection: "close, X-Hop", "X-Hop": "1", "Keep-Alive": "5", "Transfer-Encoding": "chunked", "Proxy-Authenticate": "Basic" });
    up.append("Set-Cookie", "a=1");
    up.append("Set-Cookie", "b=2");
    const h = clientResponseHeaders(up);
    expect(h.get("content-encoding")).toBe("gzip");
    expect(h.get("content-length")).toBe("47");
    expect(h.getSetCookie()).toEqual(["a=1", "b=2"]);
    for (const name of ["connection", "x-hop", "keep-alive", "transfer-encoding", "proxy-authenticate"]) expect(h.has(name)).toBe(false);
    expect(h.get("via")).toBe("1.1 tokenplace-relay");
  });

  test("an upstream's Via is extended, relay-only fields stay behind", () => {
    const h = clientResponseHeaders(new Headers({ Via: "1.1 gpu", "X-Relay-Server-Token": "secret-secret-secret", "Content-Type": "text/event-stream" }));
    expect(h.get("via")).toBe("1.1 gpu, 1.1 tokenplace-relay");
    expect(h.has("x-relay-server-token")).toBe(false);
    expect(h.get("content-type")).toBe("text/event-stream");
  });
});
