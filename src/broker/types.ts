/**
 * The broker's state, behind an async interface so the in-memory store and a shared one
 * (Redis/Valkey) are interchangeable. Values are opaque ciphertext strings: never parsed.
 *
 * Every payload (queued job, stored answer, undrained stream chunk) counts against
 * maxStoredBytes from the moment it is stored until it leaves: taken, drained, replaced, expired,
 * swept or dropped with its node or session. An add that would not fit is refused, never evicts.
 */
export interface Job {
  client_public_key?: string;
  chat_history: string;
  cipherkey: string;
  iv: string;
  stream?: boolean;
}

export interface Answer {
  chat_history: string;
  cipherkey: string;
  iv: string;
}

export type TouchResult = "ok" | "full";
/**
 * "storage_full": the payload would take the stored bytes past maxStoredBytes (after a sweep made
 * no room); "node_storage_full": past the node's share of it (see ./bytes.ts).
 */
export type EnqueueResult = "queued" | "unknown_node" | "queue_full" | "node_storage_full" | "storage_full";
export type StoreResult = "stored" | "full" | "storage_full";
export type PushResult =
  | { kind: "stored"; clientKey: string }
  | { kind: "unknown_session" }
  | { kind: "session_full" }
  | { kind: "already_final" }
  | { kind: "storage_full" };

export interface StreamDrain {
  sessionId: string;
  chunks: unknown[];
  final: boolean;
}

export interface StoreStats {
  nodes: number;
  queuedJobs: number;
  maxQueueDepth: number;
  answers: number;
  streams: number;
  /**
   * Payload bytes held against maxStoredBytes (queued jobs, answers, undrained chunks; see
   * ./bytes.ts), including what expired and was not pruned or swept yet: the budget's own count.
   */
  storedBytes: number;
}

export type ExpiredKind = "node" | "job" | "answer" | "stream";

export interface BrokerStore {
  /**
   * True when the transitions that make work available (enqueueJob "queued", putAnswer "stored",
   * openStream, pushChunk "stored") publish the wake-up of their topic to the other replicas
   * themselves, in the same atomic step, whenever a poll may be held for it: the handler then wakes
   * only this process's waiters (NotifyOptions.published). Such a store learns that a poll may be
   * held from the `holdMs` of takeJobs, takeAnswer and drainStream: a look that finds nothing
   * marks its topic until that hold (plus a margin) is over.
   */
  readonly publishesWakes?: boolean;
  /** Registers a node or refreshes its last-seen time. */
  touchNode(key: string): Promise<TouchResult>;
  /** A random node seen within the stale timeout, if any. */
  pickNode(): Promise<string | undefined>;
  enqueueJob(nodeKey: string, job: Job): Promise<EnqueueResult>;
  /**
   * Removes and returns up to `max` jobs for the node, oldest first. `holdMs`: how long the caller
   * may still hold the poll if nothing is found (absent or 0: it will not be held).
   */
  takeJobs(nodeKey: string, max: number, holdMs?: number): Promise<Job[]>;
  /** Stores the answer for a client, replacing an uncollected one. */
  putAnswer(clientKey: string, answer: Answer): Promise<StoreResult>;
  /** Removes and returns the client's answer: delivered once. `holdMs` as for takeJobs. */
  takeAnswer(clientKey: string, holdMs?: number): Promise<Answer | undefined>;
  /** Whether another stream session fits (checked when a streaming job is accepted). */
  canOpenStream(): Promise<boolean>;
  /** Opens a stream session; a newer one for the same client replaces the older. */
  openStream(clientKey: string, sessionId: string): Promise<void>;
  pushChunk(sessionId: string, chunk: unknown, final: boolean): Promise<PushResult>;
  /**
   * Everything queued since the last drain; a final drain ends the session. `holdMs` as for
   * takeJobs (nothing found: no session, or no chunk of an unfinished one).
   */
  drainStream(clientKey: string, holdMs?: number): Promise<StreamDrain | undefined>;
  /** Drops expired nodes (with their jobs), answers and stream sessions. */
  sweep(): Promise<void>;
  stats(): Promise<StoreStats>;
  close(): Promise<void>;
}

export type { Notifier, Subscription } from "../common/notifier.ts";

export const topics = {
  job: (nodeKey: string) => `job:${nodeKey}`,
  answer: (clientKey: string) => `answer:${clientKey}`,
  stream: (clientKey: string) => `stream:${clientKey}`,
};
