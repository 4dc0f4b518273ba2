import type { Answer, Job } from "./types.ts";

/**
 * What a stored payload costs against `BrokerLimits.maxStoredBytes`. Both stores compute it here,
 * in TypeScript, and the Redis store hands the number to its scripts: the two count identically.
 *
 * Sizes are string lengths (UTF-16 code units, as API v1's envelopeBytes): the fields are base64
 * or JSON of it, so for real peers this is their byte count. Keys and bookkeeping are not counted;
 * the count bounds (queue depth, answers, sessions, chunks) bound those.
 */

/** A queued job: its ciphertext fields and the client key it carries. */
export const jobBytes = (job: Job): number =>
  job.chat_history.length + job.cipherkey.length + job.iv.length + (job.client_public_key?.length ?? 0);

/** A stored answer: its ciphertext fields (the client key names the slot, like a node key). */
export const answerBytes = (answer: Answer): number => answer.chat_history.length + answer.cipherkey.length + answer.iv.length;

/** A stream chunk as it is held until drained: its JSON text. */
export const chunkJson = (chunk: unknown): string => JSON.stringify(chunk) ?? "null";

/**
 * One node key may hold at most 1/NODE_STORED_BYTES_DIVISOR of maxStoredBytes in queued jobs
 * (429 node_storage_full beyond), so a single client flooding one node, or one node that stopped
 * polling, cannot take the whole budget: at least three other nodes' worth stays for everyone else.
 */
export const NODE_STORED_BYTES_DIVISOR = 4;

/** The most queued-job bytes one node key may hold. */
export const nodeStoredBytesLimit = (maxStoredBytes: number): number => Math.floor(maxStoredBytes / NODE_STORED_BYTES_DIVISOR);
