import type { Clock } from "../../clock.ts";
import type { Capabilities, Envelope, EvictionReason, ProgressUpdate, TerminalStatus, V1Events } from "../store.ts";

/** The bounds and lifetimes the memory store enforces (milliseconds). */
export interface MemoryLimits {
  maxNodes: number;
  maxRequests: number;
  maxAnswers: number;
  inFlightTtlMs: number;
  tombstoneTtlMs: number;
  terminalTtlMs: number;
  pendingTtlMs: number;
  answerTtlMs: number;
  /** Ciphertext bytes held at once (queued requests, stored answers, progress); beyond: storage_full. */
  maxStoredBytes?: number;
  /**
   * Bytes of live requests one client address may hold (queued or in flight, until they leave);
   * beyond: client_storage_full. Absent: only maxStoredBytes applies. See DEFAULT_V1_CLIENT_SHARE_DIVISOR.
   */
  maxStoredBytesPerClient?: number;
}

/**
 * Terminal and outcome records outlive their request (spec §7.5) and cost a client nothing to
 * create, so their number is capped too: past this many, the oldest are forgotten first (a late
 * retrieve then sees 404 instead of 410, and client.py stops polling either way).
 */
export const MAX_TERMINAL_RECORDS_PER_REQUEST_SLOT = 10;

export interface QueueItem {
  envelope: Envelope;
  /** Pair id of a tracked request; absent for requests without request_id. */
  pair?: string;
  enqueuedAt: number;
  /** The request's deadline, or the pending TTL for untracked requests. */
  expiresAt: number;
  /** Untracked requests only: the bytes they hold while queued (tracked ones count in Pending). */
  bytes?: number;
  /** Untracked requests only: the client address they are charged to (tracked ones: Pending.owner). */
  owner?: string;
}

export interface InFlight {
  pair: string;
  clientKey: string;
  envelope: Envelope;
  deadlineAt: number;
  startedAt: number;
  /** Accounting lease: counts toward load and blocks eviction while in the future (spec §7.3). */
  leaseUntil: number;
}

export interface NodeRec {
  key: string;
  /** Registration order, for round robin among tied candidates (spec §7.6). */
  seq: number;
  capabilities: Capabilities;
  credentialDigest: string;
  lastSeen: number;
  leaseMs: number;
  /** A node held in a long poll is never stale. */
  heldUntil: number;
  queue: QueueItem[];
  /** In flight at this node, by request_id (control and progress name only the id). */
  inFlight: Map<string, InFlight>;
  /** request_ids queued or in flight here, so control can never confuse two clients' requests. */
  requestIds: Set<string>;
}

export interface Pending {
  nodeKey: string;
  clientKey: string;
  requestId: string;
  admittedAt: number;
  deadlineAt: number;
  cancelDigest?: string;
  state: "queued" | "in_flight";
  /** Bytes of its envelope, counted against the store's byte budget. */
  bytes: number;
  /** The client address its bytes are charged to, if any. */
  owner?: string;
}

interface Expiring {
  expiresAt: number;
}
export interface Terminal extends Expiring {
  status: TerminalStatus;
  reason: string;
}
export interface Tombstone extends Expiring {
  status: TerminalStatus;
  reason: string;
  deadlineAt: number;
  ownerDigest: string;
}
export interface StoredAnswer extends Expiring {
  envelope: Envelope;
  pair?: string;
  /** envelopeBytes(envelope), counted once when stored and given back as it is when it leaves. */
  bytes: number;
}

/**
 * Id of a (client key, request_id) pair, which identifies a request (spec §2): a fixed-size digest,
 * so records that outlive the request do not keep a kilobyte-long key alive. Bun's one-shot hasher:
 * the same digest as node:crypto's createHash at a fraction of the cost, several times per cycle.
 */
export const pairId = (clientKey: string, requestId: string): string =>
  Bun.CryptoHasher.hash("sha256", `${clientKey.length}:${clientKey}${requestId}`, "base64");
export const tombstoneId = pairId;

/**
 * What one stored string costs, as an upper bound of both places it can live, so that a byte
 * budget (global, per address, per node) holds whatever characters a peer sends:
 *
 * - in this process, JavaScriptCore keeps a string at 1 byte per character only while every
 *   character is Latin-1, else at 2 per UTF-16 code unit (for non-ASCII we charge 2 either way:
 *   a string decoded from a body that was not ASCII is 16-bit even when Latin-1);
 * - in Valkey, the shared stores keep it inside a JSON text (JSON.stringify of the envelope, job or
 *   answer), written as UTF-8: 1 to 3 bytes per code unit (4 per surrogate pair), 2 for `"` `\`
 *   and the short escapes, 6 for other control characters and lone surrogates (`\uXXXX`,
 *   ECMA-262 JSON.stringify / RFC 8259 §7).
 *
 * Real peers send base64 (the ciphertext fields, relay-api-v1 §9) and base64 PEM keys (§2): those
 * are ASCII without escapes and cost exactly their length, found by two native scans (~0.3 ms for
 * 4 MiB). That ASCII is held at 1 byte per character holds because the validators copy the kept
 * fields of a body that was not all ASCII into 1-byte strings (the encoding note in
 * ../validate.ts). Only escapes and lone surrogates take the counting loop below (~10 ms for 4 MiB).
 */
export function storedStringBytes(s: string): number {
  const utf8 = Buffer.byteLength(s, "utf8");
  if (!JSON_ESCAPED.test(s)) {
    if (utf8 === s.length) return utf8;
    // Nothing escaped and no lone surrogate: the JSON is the UTF-8 itself (~2 ms for 4 MiB).
    if (wellFormed(s)) return Math.max(utf8, 2 * s.length);
  }
  let json = 0;
  let wide = false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) json += c < 0x20 ? (SHORT_ESCAPES.has(c) ? 2 : 6) : c === 0x22 || c === 0x5c ? 2 : 1;
    else {
      wide = true;
      if (c < 0x800) json += 2;
      else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
        json += 4;
        i++;
      } else json += c >= 0xd800 && c <= 0xdfff ? 6 : 3;
    }
  }
  return Math.max(json, wide ? 2 * s.length : s.length);
}

/**
 * What a stored text (a stream chunk's JSON, kept as it is in both stores) costs: its length while
 * ASCII, else the larger of 2 bytes per code unit (JavaScriptCore) and its UTF-8 length (Valkey).
 */
export function storedTextBytes(s: string): number {
  const utf8 = Buffer.byteLength(s, "utf8");
  return utf8 === s.length ? utf8 : Math.max(utf8, 2 * s.length);
}

/** Only ASCII encodes to exactly one UTF-8 byte per code unit (a lone surrogate becomes 3). */
export const isAscii = (s: string): boolean => Buffer.byteLength(s, "utf8") === s.length;

/** String.prototype.isWellFormed (ES2024, native; the project's lib is ES2022): no lone surrogate. */
const wellFormed = (s: string): boolean => (s as string & { isWellFormed(): boolean }).isWellFormed();

/** What JSON.stringify escapes among ASCII characters. */
const JSON_ESCAPED = /[\x00-\x1f"\\]/;
/** \b \t \n \f \r: escaped in two characters, other control characters in six. */
const SHORT_ESCAPES = new Set([0x08, 0x09, 0x0a, 0x0c, 0x0d]);

/** Bytes a stored envelope costs: its strings, each at storedStringBytes. */
export const envelopeBytes = (e: { client_public_key: string; chat_history?: string; ciphertext?: string; cipherkey: string; iv: string; request_id?: string }) =>
  storedStringBytes(e.client_public_key) +
  (e.chat_history === undefined ? 0 : storedStringBytes(e.chat_history)) +
  (e.ciphertext === undefined ? 0 : storedStringBytes(e.ciphertext)) +
  storedStringBytes(e.cipherkey) +
  storedStringBytes(e.iv) +
  (e.request_id === undefined ? 0 : storedStringBytes(e.request_id));

/** Digests are equal-length hex; compared in constant time anyway (spec §3.2). */
export function digestEquals(a: string | undefined, b: string | undefined): boolean {
  if (a === undefined || b === undefined || a.length !== b.length) return false;
  return crypto.timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

/** All state of one process, shared by the operation groups (nodes, requests, responses). */
export class MemoryState {
  readonly nodes = new Map<string, NodeRec>();
  readonly pending = new Map<string, Pending>();
  readonly terminal = new Map<string, Terminal>();
  /** A terminal outcome was counted for the pair: completion counts once, late answers say "completed". */
  readonly outcomes = new Map<string, Expiring & { outcome: "completed" | TerminalStatus }>();
  readonly tombstones = new Map<string, Tombstone>();
  /** Ciphertext bytes held now (queued, in flight, stored answers, progress). */
  storedBytes = 0;
  /** Bytes of live requests per client address; an address leaves the map at 0. */
  readonly clientBytes = new Map<string, number>();
  /** Answers by client key, oldest first (retrieve without request_id takes the oldest). */
  readonly answers = new Map<string, Map<string, StoredAnswer>>();
  answerCount = 0;
  readonly progress = new Map<string, ProgressUpdate>();
  untrackedQueued = 0;
  nodeSeq = 0;
  /** Round-robin position per exact set of tied candidates, and the global cursor (spec §7.6). */
  readonly cursors = new Map<string, number>();
  globalCursor = 0;

  constructor(
    readonly limits: MemoryLimits,
    readonly clock: Clock,
    readonly events: V1Events,
  ) {}

  now(): number {
    return this.clock.now();
  }

  isStale(node: NodeRec, now = this.now()): boolean {
    return now - node.lastSeen > node.leaseMs && node.heldUntil <= now;
  }

  liveInFlight(node: NodeRec, now = this.now()): number {
    let n = 0;
    for (const f of node.inFlight.values()) if (f.leaseUntil > now) n++;
    return n;
  }

  /** Stale, not held, and no live accounting lease: housekeeping removes it (spec §7.1). */
  isEvictable(node: NodeRec, now = this.now()): boolean {
    return this.isStale(node, now) && this.liveInFlight(node, now) === 0;
  }

  answerId(envelope: Envelope): string {
    return envelope.request_id !== undefined ? `r:${envelope.request_id}` : `u:${crypto.randomUUID()}`;
  }

  /**
   * `pair` and `bytes`: the envelope's pair id and envelopeBytes when the caller has them already
   * (a SHA-256 and six string scans less).
   */
  storeAnswer(envelope: Envelope, expiresAt: number, pair?: string, bytes = envelopeBytes(envelope)): void {
    let byClient = this.answers.get(envelope.client_public_key);
    if (!byClient) this.answers.set(envelope.client_public_key, (byClient = new Map()));
    const id = this.answerId(envelope);
    const previous = byClient.get(id);
    if (previous) this.storedBytes -= previous.bytes;
    else this.answerCount++;
    this.storedBytes += bytes;
    byClient.set(id, {
      envelope,
      expiresAt,
      pair: envelope.request_id === undefined ? undefined : (pair ?? pairId(envelope.client_public_key, envelope.request_id)),
      bytes,
    });
  }

  hasAnswer(clientKey: string, requestId: string): boolean {
    return this.answers.get(clientKey)?.has(`r:${requestId}`) ?? false;
  }

  /**
   * Removes and returns one answer: the one for requestId, or without one the client's oldest
   * answer to a request that had no id. Answers to tracked requests are only ever handed to a
   * retrieve that names the id: the client key is public, the request id is not (spec §3.4).
   */
  takeAnswer(clientKey: string, requestId: string | undefined): StoredAnswer | undefined {
    const byClient = this.answers.get(clientKey);
    if (!byClient) return undefined;
    let id: string | undefined = requestId !== undefined ? `r:${requestId}` : undefined;
    if (requestId === undefined) for (const k of byClient.keys()) if (k.startsWith("u:")) {
      id = k;
      break;
    }
    if (id === undefined) return undefined;
    const found = byClient.get(id);
    if (!found) return undefined;
    byClient.delete(id);
    this.answerCount--;
    this.storedBytes -= found.bytes;
    if (byClient.size === 0) this.answers.delete(clientKey);
    return found;
  }

  /** Whether `bytes` more ciphertext fits the budget. */
  fits(bytes: number): boolean {
    return this.limits.maxStoredBytes === undefined || this.storedBytes + bytes <= this.limits.maxStoredBytes;
  }

  /** Whether `bytes` more fit the share of client address `owner` (none: no share applies). */
  fitsClient(owner: string | undefined, bytes: number): boolean {
    const cap = this.limits.maxStoredBytesPerClient;
    return owner === undefined || cap === undefined || (this.clientBytes.get(owner) ?? 0) + bytes <= cap;
  }

  /** Moves the bytes charged to `owner` by `delta`; exactly what was added is released. */
  chargeClient(owner: string | undefined, delta: number): void {
    if (owner === undefined || delta === 0) return;
    const left = (this.clientBytes.get(owner) ?? 0) + delta;
    if (left === 0) this.clientBytes.delete(owner);
    else this.clientBytes.set(owner, left);
  }

  /** Marks a pair terminal and counts its outcome once; the request's bytes are released. */
  makeTerminal(pair: string, status: TerminalStatus, reason: string): void {
    const now = this.now();
    this.capRecords(this.terminal);
    this.terminal.set(pair, { status, reason, expiresAt: now + this.limits.terminalTtlMs });
    this.countOutcome(pair, status);
    this.dropProgress(pair);
    this.dropPending(pair);
  }

  countOutcome(pair: string, outcome: "completed" | TerminalStatus): void {
    if (this.outcomes.has(pair)) return;
    this.capRecords(this.outcomes);
    this.outcomes.set(pair, { outcome, expiresAt: this.now() + this.limits.terminalTtlMs });
    this.events.outcome(outcome);
  }

  /** Forgets the oldest records (Map order is insertion order) once the cap is reached. */
  private capRecords(map: Map<string, unknown>): void {
    const cap = this.limits.maxRequests * MAX_TERMINAL_RECORDS_PER_REQUEST_SLOT;
    while (map.size >= cap) map.delete(map.keys().next().value!);
  }

  /** An untracked request left the queue (claimed, expired or its node gone). */
  dropUntracked(item: QueueItem): void {
    this.untrackedQueued--;
    this.storedBytes -= item.bytes ?? 0;
    this.chargeClient(item.owner, -(item.bytes ?? 0));
  }

  /** Removes a live request's record and releases the bytes of its envelope. */
  dropPending(pair: string): void {
    const p = this.pending.get(pair);
    if (!p) return;
    this.pending.delete(pair);
    this.storedBytes -= p.bytes;
    this.chargeClient(p.owner, -p.bytes);
  }

  setProgress(pair: string, update: ProgressUpdate): void {
    this.dropProgress(pair);
    this.progress.set(pair, update);
    this.storedBytes += envelopeBytes(update);
  }

  /** Removes and returns the buffered progress of a request. */
  dropProgress(pair: string): ProgressUpdate | undefined {
    const u = this.progress.get(pair);
    if (!u) return undefined;
    this.progress.delete(pair);
    this.storedBytes -= envelopeBytes(u);
    return u;
  }

  /** Leaves the owner a "stop" signal for work it held (spec §7.5). */
  tombstone(node: NodeRec, f: InFlight, status: TerminalStatus, reason: string): void {
    this.tombstones.set(tombstoneId(node.key, f.envelope.request_id!), {
      status,
      reason,
      deadlineAt: f.deadlineAt,
      ownerDigest: node.credentialDigest,
      expiresAt: this.now() + this.limits.tombstoneTtlMs,
    });
  }

  /** Ends a request that is in flight at `node`: tombstone for the owner, terminal for the client. */
  endInFlight(node: NodeRec, f: InFlight, status: TerminalStatus, reason: string): void {
    const rid = f.envelope.request_id!;
    node.inFlight.delete(rid);
    node.requestIds.delete(rid);
    this.tombstone(node, f, status, reason);
    this.makeTerminal(f.pair, status, reason);
  }

  /** Removes a queued item from its node's queue; true when it was there. */
  dequeue(node: NodeRec, pair: string): boolean {
    const i = node.queue.findIndex((q) => q.pair === pair);
    if (i < 0) return false;
    const [item] = node.queue.splice(i, 1);
    if (item?.envelope.request_id !== undefined) node.requestIds.delete(item.envelope.request_id);
    return true;
  }

  /** Unregister and eviction share their effects (spec §6.4, §7.1). */
  removeNode(node: NodeRec, reason: EvictionReason): void {
    this.nodes.delete(node.key);
    const now = this.now();
    // A deadline that already passed wins: housekeeping expires requests before it evicts (spec §7.7).
    for (const item of node.queue) {
      if (!item.pair) this.dropUntracked(item);
      else if (item.expiresAt <= now) this.makeTerminal(item.pair, "expired", "pending_request_ttl_exceeded");
      else this.makeTerminal(item.pair, "cancelled", "server_unregistered");
    }
    node.queue = [];
    for (const f of [...node.inFlight.values()]) {
      if (f.deadlineAt <= now) this.endInFlight(node, f, "expired", "provider_timeout");
      else this.endInFlight(node, f, "cancelled", "server_unregistered");
    }
    this.events.evicted(reason);
  }
}
