/**
 * Client identity for rate limiting (src/http/client-ip.ts): the socket address unless a trusted
 * proxy is the peer; then the rightmost X-Forwarded-For hop that is not a trusted proxy. Nothing a
 * client writes into a header is ever taken as its identity.
 */
import { describe, expect, test } from "bun:test";
import {
  DEFAULT_TRUSTED_PROXY_CIDRS, cidrContains, createClientIpResolver, formatIp, parseCidr, parseForwardedHop, parseIp, rateLimitKey, type Cidr,
} from "../../src/http/client-ip.ts";

const cidrs = (...texts: string[]): Cidr[] => texts.map((t) => parseCidr(t)!);
const req = (xff?: string | string[]) => {
  const headers = new Headers();
  for (const v of [xff ?? []].flat()) headers.append("X-Forwarded-For", v);
  return new Request("http://relay/api/v1/relay/requests", { headers });
};
const resolveWith = (trustForwarded: boolean, trusted: Cidr[] = cidrs(...DEFAULT_TRUSTED_PROXY_CIDRS)) => {
  const resolve = createClientIpResolver({ trustForwarded, trustedProxies: trusted });
  return (peer: string | undefined, xff?: string | string[]) => {
    const ip = resolve(req(xff), peer);
    return ip && formatIp(ip);
  };
};

describe("addresses and CIDRs", () => {
  test("IPv4, IPv6 (compressed, embedded IPv4, zone) and IPv4-mapped IPv6 parse; junk does not", () => {
    expect(formatIp(parseIp("203.0.113.7")!)).toBe("203.0.113.7");
    expect(formatIp(parseIp("::ffff:203.0.113.7")!)).toBe("203.0.113.7");
    expect(formatIp(parseIp("2001:db8::1")!)).toBe("2001:db8:0:0:0:0:0:1");
    expect(formatIp(parseIp("2001:DB8:0:0:1::")!)).toBe("2001:db8:0:0:1:0:0:0");
    expect(formatIp(parseIp("::1")!)).toBe("0:0:0:0:0:0:0:1");
    expect(formatIp(parseIp("64:ff9b::192.0.2.33")!)).toBe("64:ff9b:0:0:0:0:c000:221");
    expect(formatIp(parseIp("fe80::1%eth0")!)).toBe("fe80:0:0:0:0:0:0:1");
    for (const junk of ["", "unknown", "256.1.1.1", "1.2.3", "01.2.3.4x", "1.2.3.4.5", "2001:db8::1::2", "_hidden", "::g", "1.2.3.4/8"]) {
      expect(parseIp(junk)).toBeUndefined();
    }
  });

  test("forwarded hops may carry a port or brackets", () => {
    expect(formatIp(parseForwardedHop(" 198.51.100.4:8443 ")!)).toBe("198.51.100.4");
    expect(formatIp(parseForwardedHop("[2001:db8::5]:443")!)).toBe("2001:db8:0:0:0:0:0:5");
    expect(formatIp(parseForwardedHop("[2001:db8::5]")!)).toBe("2001:db8:0:0:0:0:0:5");
    expect(parseForwardedHop("unknown")).toBeUndefined();
    expect(parseForwardedHop("")).toBeUndefined();
  });

  test("CIDR membership, IPv4 and IPv6, including IPv4-mapped peers", () => {
    const [ten, v6ula, single] = cidrs("10.0.0.0/8", "fc00::/7", "192.0.2.1");
    expect(cidrContains(ten!, parseIp("10.42.3.4")!)).toBe(true);
    expect(cidrContains(ten!, parseIp("::ffff:10.42.3.4")!)).toBe(true);
    expect(cidrContains(ten!, parseIp("11.0.0.1")!)).toBe(false);
    expect(cidrContains(v6ula!, parseIp("fd12:3456::1")!)).toBe(true);
    expect(cidrContains(v6ula!, parseIp("fe80::1")!)).toBe(false);
    expect(cidrContains(single!, parseIp("192.0.2.1")!)).toBe(true);
    expect(cidrContains(single!, parseIp("192.0.2.2")!)).toBe(false);
    // An IPv4 CIDR never covers a native IPv6 address that merely shares low bits.
    expect(cidrContains(ten!, parseIp("::a00:1")!)).toBe(false);
    for (const bad of ["10.0.0.0/33", "fc00::/129", "10.0.0.0/", "10.0.0.0/x", "example.com/8", ""]) expect(parseCidr(bad)).toBeUndefined();
  });

  test("buckets: an IPv4 address itself, an IPv6 address's /64", () => {
    expect(rateLimitKey(parseIp("203.0.113.7")!)).toBe("203.0.113.7");
    expect(rateLimitKey(parseIp("::ffff:203.0.113.7")!)).toBe("203.0.113.7");
    const a = rateLimitKey(parseIp("2001:db8:1:2:aaaa::1")!);
    expect(a).toBe("2001:db8:1:2:0:0:0:0/64");
    expect(rateLimitKey(parseIp("2001:db8:1:2:ffff:1:2:3")!)).toBe(a);
    expect(rateLimitKey(parseIp("2001:db8:1:3::1")!)).not.toBe(a);
  });
});

describe("who the client is", () => {
  test("by default only the socket counts: X-Forwarded-For is ignored, whatever it says", () => {
    const who = resolveWith(false);
    expect(who("127.0.0.1", "203.0.113.9")).toBe("127.0.0.1");
    expect(who("198.51.100.20", "10.0.0.1, 203.0.113.9")).toBe("198.51.100.20");
    expect(who("::ffff:127.0.0.1")).toBe("127.0.0.1");
    expect(who(undefined, "203.0.113.9")).toBeUndefined();
  });

  test("with trust on, a peer that is not a trusted proxy is the client: its header is spoofing", () => {
    const who = resolveWith(true);
    expect(who("198.51.100.20", "203.0.113.9")).toBe("198.51.100.20");
    expect(who("198.51.100.20", "127.0.0.1")).toBe("198.51.100.20");
  });

  test("behind a trusted proxy: the rightmost hop that is no trusted proxy; what the client prepended never counts", () => {
    const who = resolveWith(true);
    expect(who("10.42.0.7", "203.0.113.9")).toBe("203.0.113.9");
    // The client sent "X-Forwarded-For: 1.1.1.1"; the ingress appended the address it saw.
    expect(who("10.42.0.7", "1.1.1.1, 203.0.113.9")).toBe("203.0.113.9");
    expect(who("10.42.0.7", "1.1.1.1, 2.2.2.2, 203.0.113.9")).toBe("203.0.113.9");
    // Two trusted proxies in a row (a load balancer, then the ingress) are walked past.
    expect(who("10.42.0.7", "6.6.6.6, 203.0.113.9, 192.168.1.10")).toBe("203.0.113.9");
    // Several header lines are one list, in order.
    expect(who("10.42.0.7", ["6.6.6.6", "203.0.113.9, 10.0.0.3"])).toBe("203.0.113.9");
    // A spoofed private address on the left cannot make the client look like a proxy.
    expect(who("10.42.0.7", "10.9.9.9, 203.0.113.9")).toBe("203.0.113.9");
    // IPv6 clients and ports.
    expect(who("fd00::7", "[2001:db8::5]:51000")).toBe("2001:db8:0:0:0:0:0:5");
  });

  test("junk in the chain stops the walk at the last address a trusted proxy vouched for", () => {
    const who = resolveWith(true);
    expect(who("10.42.0.7", "203.0.113.9, unknown")).toBe("10.42.0.7");
    expect(who("10.42.0.7", "203.0.113.9, garbage, 10.0.0.8")).toBe("10.0.0.8");
    expect(who("10.42.0.7", "")).toBe("10.42.0.7");
  });

  test("only trusted hops (a request from inside the cluster): the leftmost; no header: the proxy itself", () => {
    const who = resolveWith(true);
    expect(who("10.42.0.7", "10.1.2.3, 10.42.0.1")).toBe("10.1.2.3");
    expect(who("10.42.0.7")).toBe("10.42.0.7");
  });

  test("RELAY_TRUSTED_PROXY_CIDRS narrows trust: a private peer outside the list is a client", () => {
    const who = resolveWith(true, cidrs("10.42.0.0/16"));
    expect(who("10.42.0.7", "203.0.113.9")).toBe("203.0.113.9");
    expect(who("10.43.0.7", "203.0.113.9")).toBe("10.43.0.7");
    expect(who("127.0.0.1", "203.0.113.9")).toBe("127.0.0.1");
    // 192.168.1.10 is not a trusted proxy here, so it is the client.
    expect(who("10.42.0.7", "203.0.113.9, 192.168.1.10")).toBe("192.168.1.10");
  });
});
