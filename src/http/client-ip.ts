/**
 * node:net's isIP, loaded on first use: only IPv6 addresses reach it, and evaluating node:net at
 * start cost the compiled relay RSS (docs/demo-and-bench.md, "Where the relay's memory goes").
 */
let netIsIP: ((s: string) => number) | undefined;
const isIP = (s: string): number => (netIsIP ??= (require("node:net") as typeof import("node:net")).isIP)(s);

/**
 * Who a request comes from, in a form the client cannot forge (used for rate limiting).
 *
 * By default that is the socket's peer address and nothing else: no header counts. Behind an
 * ingress (RELAY_PROXY_TRUST_FORWARDED=true) the peer is the ingress, so the client is read from
 * X-Forwarded-For, but only the part trusted proxies wrote: when the peer is one of
 * RELAY_TRUSTED_PROXY_CIDRS, the list is walked from the right (each proxy appends the address it
 * saw) past every trusted hop, and the first address that is not a trusted proxy is the client.
 * Whatever a client put in the header itself lies further left and is never reached; a peer that
 * is not a trusted proxy is the client, whatever its header says.
 */

/** An address as 16 bytes (IPv4 as IPv4-mapped IPv6, ::ffff:a.b.c.d), so one matcher serves both. */
export interface Ip {
  bytes: Uint8Array;
  /** True for IPv4 (or IPv4-mapped IPv6): keyed and printed as dotted quad. */
  v4: boolean;
}

export interface Cidr {
  bytes: Uint8Array;
  /** Prefix length over the 128-bit form (IPv4 /n is /96+n). */
  bits: number;
  /** As configured, for --check-config. */
  text: string;
}

/**
 * Trusted when RELAY_PROXY_TRUST_FORWARDED=true and RELAY_TRUSTED_PROXY_CIDRS is unset: loopback,
 * RFC 1918 and IPv6 unique-local addresses, i.e. where an in-cluster ingress (k3s pods:
 * 10.42.0.0/16) or a proxy on the same host connects from. Public addresses are never trusted by
 * default.
 */
export const DEFAULT_TRUSTED_PROXY_CIDRS = ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"] as const;

const V4_MAPPED_PREFIX = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

function parseV4(s: string): number[] | undefined {
  const parts = s.split(".");
  if (parts.length !== 4) return undefined;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out.push(n);
  }
  return out;
}

function parseV6(s: string): number[] | undefined {
  if (isIP(s) !== 6) return undefined;
  let head = s;
  let tailV4: number[] = [];
  const lastColon = head.lastIndexOf(":");
  if (head.slice(lastColon + 1).includes(".")) {
    const v4 = parseV4(head.slice(lastColon + 1));
    if (!v4) return undefined;
    tailV4 = v4;
    head = head.slice(0, lastColon + 1) + "0:0";
  }
  const [left, right] = head.includes("::") ? head.split("::") : [head, undefined];
  const groups = (part: string | undefined) => (part ? part.split(":").filter((g) => g !== "") : []);
  const l = groups(left);
  const r = groups(right);
  const fill = right === undefined ? 0 : 8 - l.length - r.length;
  const all = [...l, ...Array<string>(fill).fill("0"), ...r];
  if (all.length !== 8) return undefined;
  const bytes: number[] = [];
  for (const g of all) {
    const n = Number.parseInt(g, 16);
    bytes.push(n >> 8, n & 0xff);
  }
  if (tailV4.length === 4) bytes.splice(12, 4, ...tailV4);
  return bytes;
}

/** Parses a bare IPv4 or IPv6 address (an IPv6 zone id is dropped); anything else is undefined. */
export function parseIp(text: string): Ip | undefined {
  const s = text.trim();
  const v4 = parseV4(s);
  if (v4) return { bytes: Uint8Array.from([...V4_MAPPED_PREFIX, ...v4]), v4: true };
  const v6 = parseV6(s.replace(/%[^%]*$/, ""));
  if (!v6) return undefined;
  const bytes = Uint8Array.from(v6);
  return { bytes, v4: V4_MAPPED_PREFIX.every((b, i) => bytes[i] === b) };
}

/**
 * One X-Forwarded-For entry: an address, optionally with a port (`1.2.3.4:80`, `[::1]:80`) or in
 * brackets, as some proxies write them. `unknown`, obfuscated identifiers and junk are undefined.
 */
export function parseForwardedHop(text: string): Ip | undefined {
  let s = text.trim();
  const bracketed = /^\[([^\]]+)\](?::\d{1,5})?$/.exec(s);
  if (bracketed) s = bracketed[1]!;
  else if (/^[\d.]+:\d{1,5}$/.test(s)) s = s.slice(0, s.lastIndexOf(":"));
  return parseIp(s);
}

export function parseCidr(text: string): Cidr | undefined {
  const s = text.trim();
  const slash = s.indexOf("/");
  const addr = parseIp(slash < 0 ? s : s.slice(0, slash));
  if (!addr) return undefined;
  const max = addr.v4 ? 32 : 128;
  let bits = max;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > max) return undefined;
    bits = Number(p);
  }
  return { bytes: addr.bytes, bits: addr.v4 ? 96 + bits : bits, text: s };
}

export function cidrContains(cidr: Cidr, ip: Ip): boolean {
  let left = cidr.bits;
  for (let i = 0; i < 16 && left > 0; i++, left -= 8) {
    const mask = left >= 8 ? 0xff : (0xff << (8 - left)) & 0xff;
    if ((cidr.bytes[i]! & mask) !== (ip.bytes[i]! & mask)) return false;
  }
  return true;
}

export function formatIp(ip: Ip): string {
  if (ip.v4) return Array.from(ip.bytes.subarray(12)).join(".");
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((ip.bytes[i]! << 8) | ip.bytes[i + 1]!).toString(16));
  return groups.join(":");
}

/**
 * The rate-limit bucket of an address: an IPv4 address itself, an IPv6 address's /64 (the usual
 * allocation to one subscriber: one host can use its whole /64, so counting per address would let
 * it pick a fresh bucket per request).
 */
export function rateLimitKey(ip: Ip): string {
  if (ip.v4) return formatIp(ip);
  const prefix = Uint8Array.from([...ip.bytes.subarray(0, 8), 0, 0, 0, 0, 0, 0, 0, 0]);
  return `${formatIp({ bytes: prefix, v4: false })}/64`;
}

export interface ClientIpOptions {
  /** RELAY_PROXY_TRUST_FORWARDED: read X-Forwarded-For when the peer is a trusted proxy. */
  trustForwarded: boolean;
  /** RELAY_TRUSTED_PROXY_CIDRS (or the defaults) when trustForwarded; ignored otherwise. */
  trustedProxies: readonly Cidr[];
}

/**
 * Returns the client address of a request: `peer` is the socket's address (Bun's
 * server.requestIP). Undefined only when the peer is unknown and nothing trusted says otherwise.
 */
export function createClientIpResolver(opts: ClientIpOptions): (req: Request, peer: string | undefined) => Ip | undefined {
  const trusted = (ip: Ip) => opts.trustedProxies.some((c) => cidrContains(c, ip));
  return (req, peer) => {
    const socket = peer === undefined ? undefined : parseIp(peer);
    if (!opts.trustForwarded || !socket || !trusted(socket)) return socket;
    const header = req.headers.get("x-forwarded-for");
    if (header === null) return socket;
    // Several X-Forwarded-For lines arrive joined with ", " in order, which is one list.
    const hops = header.split(",");
    let last = socket;
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = parseForwardedHop(hops[i]!);
      // A trusted proxy never writes junk: junk came from the client, so the last address a
      // trusted proxy vouched for is as far as the chain can be believed.
      if (!hop) return last;
      if (!trusted(hop)) return hop;
      last = hop;
    }
    // Every hop is a trusted proxy (a request from inside the cluster): the leftmost is the origin.
    return last;
  };
}
