import { ManualClock } from "../../src/clock.ts";
import { MemoryV1Store } from "../../src/v1/index.ts";
import type { EvictionReason, Outcome, V1Events, V1Store } from "../../src/v1/store.ts";

/** Limits small enough to reach in a test; times in ms. */
export const TEST_LIMITS = {
  leaseMs: 30_000,
  maxNodes: 50,
  maxRequests: 100,
  maxAnswers: 100,
  inFlightTtlMs: 30_000,
  tombstoneTtlMs: 60_000,
  terminalTtlMs: 300_000,
  pendingTtlMs: 300_000,
  answerTtlMs: 300_000,
};

export interface Recorded extends V1Events {
  evictions: EvictionReason[];
  outcomes: Outcome[];
  drops: string[];
}

export function recorder(): Recorded {
  const r: Recorded = {
    evictions: [],
    outcomes: [],
    drops: [],
    evicted: (reason) => void r.evictions.push(reason),
    outcome: (o) => void r.outcomes.push(o),
    dropped: (kind, n) => void r.drops.push(`${kind}:${n}`),
  };
  return r;
}

export interface Backend {
  name: string;
  /** Why it cannot run here, if so (a missing tool); undefined when it can. */
  unavailable?: () => string | undefined;
  make(clock: ManualClock, events: V1Events, limits?: Partial<typeof TEST_LIMITS>): V1Store;
}

/** Every V1Store implementation: the contract suite and the protocol suite run against each. */
export const BACKENDS: Backend[] = [
  {
    name: "memory",
    make: (clock, events, limits = {}) => new MemoryV1Store({ ...TEST_LIMITS, ...limits }, clock, events),
  },
];
