/**
 * The API v1 relay's state as named atomic transitions (token.place API v1 relay spec §7-8).
 *
 * Each method is one transition that either happens whole or not at all, so a shared backend
 * (Valkey/Redis, one Lua script per method) can implement it without touching a handler. Time is
 * the store's alone (an injected clock, or the datastore's so replicas agree): handlers pass and
 * receive durations, never instants. Every value is an opaque string the relay never parses.
 * Credentials and cancel proofs reach the store only as SHA-256 hex digests.
 */

export const PROTOCOL = "tokenplace_api_v1_relay_e2ee";

export const CONTEXT_TIERS = { "8k-fast": 8192, "64k-full": 65536 } as const;
export type ContextTier = keyof typeof CONTEXT_TIERS;

export interface Capabilities {
  api_version: "v1";
  supported_model_ids: string[];
  active_context_tier: ContextTier;
  maximum_total_context_tokens: number;
  default_output_token_reservation: number;
  maximum_output_tokens: number;
  max_concurrency: number;
  backend_class: string;
}

/** What a client queued, as the node receives it (spec §6.2): routing metadata plus ciphertext. */
export interface Envelope {
  client_public_key: string;
  chat_history: string;
  cipherkey: string;
  iv: string;
  request_id?: string;
  protocol?: string;
  version?: number;
}

/** The latest encrypted progress update of a request (spec §6.9); never the node key or credential. */
export interface ProgressUpdate {
  client_public_key: string;
  request_id: string;
  protocol: string;
  version: number;
  ciphertext: string;
  cipherkey: string;
  iv: string;
}

export type TerminalStatus = "cancelled" | "expired";
export type Outcome = "completed" | "cancelled" | "expired";
export type EvictionReason = "stale_lease" | "unregistered" | "capacity_loss";
export type ControlState = "active" | "cancelled" | "expired" | "acknowledged" | "completed_unavailable";

export type RegisterResult = { kind: "registered"; credentialIssued: boolean } | { kind: "nodes_full" };

export type ClaimResult =
  | { kind: "unknown_node" }
  | { kind: "empty" }
  /** remainingMs (to the request's deadline) is absent for untracked requests (no request_id). */
  | { kind: "work"; envelope: Envelope; remainingMs?: number };

/** "client_storage_full": the admitting address holds its share of the byte budget (maxStoredBytesPerClient). */
export type EnqueueResult = "queued" | "unknown_node" | "queue_full" | "requests_full" | "storage_full" | "client_storage_full" | "duplicate";

export type ControlResult =
  | { kind: "forbidden" }
  | { kind: "active"; remainingMs: number }
  | { kind: "tombstone"; status: TerminalStatus; remainingMs: number }
  | { kind: "completed_unavailable" };

export type UnregisterResult = "removed" | "not_found" | "forbidden";

export type RespondResult =
  | { kind: "accepted" }
  | { kind: "duplicate" }
  | { kind: "gone"; status: TerminalStatus | "completed" | "gone" }
  | { kind: "answers_full" }
  | { kind: "storage_full" };

export type ProgressResult = "accepted" | "forbidden" | "not_active" | "expired" | "storage_full";

export type RetrieveResult =
  | { kind: "answer"; envelope: Envelope }
  | { kind: "terminal"; status: TerminalStatus; reason: string }
  | { kind: "pending"; remainingMs: number; progress?: ProgressUpdate }
  | { kind: "unknown" };

export type CancelResult = { kind: "cancelled"; removedFromQueue: number } | { kind: "forbidden" };

export interface SelectQuery {
  model: string;
  tier: ContextTier;
  maxQueueDepth: number;
}

export interface NodeLoad {
  key: string;
  capabilities: Capabilities;
  queueDepth: number;
  inFlight: number;
}

export type SelectResult =
  | { kind: "selected"; node: NodeLoad; eligible: NodeLoad[] }
  | { kind: "no_registered_compute_nodes" }
  | { kind: "no_matching_compute_node" }
  | { kind: "no_available_capacity"; capacityLimited: NodeLoad[] };

export interface NodeView extends NodeLoad {
  ageSeconds: number;
  leaseSeconds: number;
}

export interface V1Stats {
  nodes: number;
  healthyNodes: number;
  queued: number;
  oldestQueuedAgeSeconds: number;
  inFlight: number;
  oldestInFlightAgeSeconds: number;
  oldestLeaseAgeSeconds: number;
  answers: number;
  /** Ciphertext bytes held (queued, in flight, answers, progress). */
  storedBytes: number;
  /** Client addresses whose requests hold bytes against their share (0 once every request left). */
  clientsHoldingBytes: number;
}

/** What a transition did beyond its answer, for metrics (bounded enums only, never identities). */
export interface V1Events {
  evicted(reason: EvictionReason): void;
  outcome(outcome: Outcome): void;
  /** Uncollected answers and untracked requests that outlived their TTL. */
  dropped(kind: "answer" | "untracked_request", count: number): void;
}

export interface V1Store {
  /**
   * True when enqueue (on "queued") and respond (on "accepted") publish the wake-up of their topic
   * to the other replicas themselves, in the same atomic step: the handler then wakes only this
   * process's waiters (NotifyOptions.published) and the datastore gets one round trip, not two.
   */
  readonly publishesWakes?: boolean;
  /** servers/register: new key appended (registration order), live key renewed in place. */
  register(nodeKey: string, capabilities: Capabilities, credentialDigest: string): Promise<RegisterResult>;
  /**
   * servers/poll, one attempt: renews the lease, stores capabilities when given, marks the node
   * held for `holdMs` more, and claims the oldest live request (dropping expired heads).
   */
  claim(nodeKey: string, capabilities: Capabilities | undefined, holdMs: number): Promise<ClaimResult>;
  /** Undoes a claim whose hand-over failed (the poller left): the request goes back to the queue head. */
  release(nodeKey: string, envelope: Envelope): Promise<void>;
  /** servers/next: best_fit_smallest_capable_least_loaded_v1 over live nodes (spec §6.5). */
  select(query: SelectQuery): Promise<SelectResult>;
  /**
   * requests: admits the request with its absolute deadline and wakes the node. Its bytes count
   * against `owner` (the client address that sent it) until the request leaves the relay (answered,
   * cancelled, expired, dropped with its node); without an owner only the global budget applies.
   */
  enqueue(nodeKey: string, envelope: Envelope, cancelDigest: string | undefined, deadlineMs: number, maxQueueDepth: number, owner?: string): Promise<EnqueueResult>;
  /** servers/control: owner view of one request; renews the in-flight lease while active. */
  control(nodeKey: string, requestId: string, credentialDigest: string | undefined, acknowledge: boolean): Promise<ControlResult>;
  /** servers/unregister (credential), or operator unregister (`"operator"`). */
  unregister(nodeKey: string, proof: { credentialDigest: string | undefined } | "operator"): Promise<UnregisterResult>;
  /** responses: accepts the first answer for a live request, exactly once. */
  respond(envelope: Envelope): Promise<RespondResult>;
  /** progress: keeps the latest update for a request in flight at this node. */
  progress(nodeKey: string, credentialDigest: string, update: ProgressUpdate): Promise<ProgressResult>;
  /** responses/retrieve: takes the answer (once), or reports terminal/pending, taking buffered progress. */
  retrieve(clientKey: string, requestId: string | undefined): Promise<RetrieveResult>;
  /** Undoes a retrieve whose hand-over failed (the client left): the answer is stored again. */
  unretrieve(envelope: Envelope): Promise<void>;
  /** requests/cancel with the proof the client set at admission. */
  cancel(clientKey: string, requestId: string, cancelDigest: string, status: TerminalStatus, reason: string): Promise<CancelResult>;
  /** Expiry and eviction (spec §7.7), on a timer rather than at the start of routes. */
  sweep(): Promise<void>;
  diagnostics(): Promise<NodeView[]>;
  stats(): Promise<V1Stats>;
  /** What is lost at stop (memory backend: everything). */
  close(): Promise<V1Stats>;
}

/** Topics of the notifier: a poll waits on its node, a retrieve on its request. */
export const v1Topics = {
  node: (nodeKey: string) => `v1:node:${nodeKey}`,
  request: (clientKey: string, requestId: string | undefined) => `v1:req:${clientKey}\n${requestId ?? ""}`,
};
