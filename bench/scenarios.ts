/**
 * Payload shapes the benchmarks share. Keys have the size of real token.place keys (base64 PEM),
 * but are random base64: the relay never looks inside them.
 */
import { randomBytes } from "node:crypto";

/** A base64 PEM RSA-2048 public key is 604 characters; so is this. */
export const fakeKey = (): string => randomBytes(453).toString("base64");
