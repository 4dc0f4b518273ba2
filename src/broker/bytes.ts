import { storedStringBytes, storedTextBytes } from "../v1/memory/state.ts";
import type { Answer, Job } from "./types.ts";

/**
 * What a stored payload costs against `BrokerLimits.maxStoredBytes`. Both stores compute it here,
 * in TypeScript, and the Redis store hands the number to its scripts: the two count identically.
 *
 * Each string costs as API v1's envelopes do (storedStringBytes): an upper bound of its size in
 * this process and as UTF-8 JSON in Valkey, which for what real peers send (base64) is its length.
 * The strings a store keeps are 1-byte copies when ASCII (checkFieldLengths in ./validate.ts).
 * Keys and bookkeeping are not counted; the count bounds (queue depth, answers, sessions, chunks)
 * bound those.
 */

/** A queued job: its ciphertext fields and the client key it carries. */
export const jobBytes = (job: Job): number =>
  storedStringBytes(job.chat_history) +
  storedStringBytes(job.cipherkey) +
  storedStringBytes(job.iv) +
  (job.client_public_key === undefined ? 0 : storedStringBytes(job.client_public_key));

/** A stored answer: its ciphertext fields (the client key names the slot, like a node key). */
export const answerBytes = (answer: Answer): number =>
  storedStringBytes(answer.chat_history) + storedStringBytes(answer.cipherkey) + storedStringBytes(answer.iv);

/**
 * A stream chunk as both stores hold it until drained: its JSON text (a parsed value can take many
 * times its text in memory, and JSON.stringify yields 1-byte strings for ASCII).
 */
export const chunkJson = (chunk: unknown): string => JSON.stringify(chunk) ?? "null";

/** What a held chunk costs: its JSON text, stored as it is (storedTextBytes). */
export const chunkBytes = (json: string): number => storedTextBytes(json);

/**
 * One node key may hold at most 1/NODE_STORED_BYTES_DIVISOR of maxStoredBytes in queued jobs
 * (429 node_storage_full beyond), so a single client flooding one node, or one node that stopped
 * polling, cannot take the whole budget: at least three other nodes' worth stays for everyone else.
 */
export const NODE_STORED_BYTES_DIVISOR = 4;

/** The most queued-job bytes one node key may hold. */
export const nodeStoredBytesLimit = (maxStoredBytes: number): number => Math.floor(maxStoredBytes / NODE_STORED_BYTES_DIVISOR);
