import { CONTEXT_TIERS, type ContextTier, type V1Store } from "../v1/store.ts";
import { DEFAULT_MODEL } from "../v1/validate.ts";

/**
 * `GET /relay/status`: what the chat page's status strip and model picker need, from the relay's
 * own state, and nothing a visitor should not see: counts and the model ids and context tiers the
 * online nodes advertise. Never a key (not even a fingerprint), credential, request id, address or
 * per-node row, so it stays public when /relay/diagnostics is for operators only.
 */
export interface PublicStatus {
  /** Registered API v1 nodes whose lease is current. */
  nodes_online: number;
  /** Requests waiting for a node, over all nodes. */
  queue_depth: number;
  /** Requests a node is working on. */
  in_flight: number;
  /** What servers/next picks without a `model` query. */
  default_model: string;
  /** Each model the online nodes advertise, with its tiers (smallest first) and how many nodes serve it. */
  models: { id: string; context_tiers: ContextTier[]; nodes: number }[];
}

/** One store read per this many ms at most, however many visitors ask (single flight). */
export const STATUS_TTL_MS = 1_000;
/** A bound on the list, whatever nodes advertise (each node may list 64 ids). */
export const MAX_STATUS_MODELS = 64;

export async function readPublicStatus(store: V1Store): Promise<PublicStatus> {
  const [stats, nodes] = await Promise.all([store.stats(), store.diagnostics()]);
  const models = new Map<string, { tiers: Set<ContextTier>; nodes: number }>();
  let online = 0;
  for (const n of nodes) {
    // The store's own staleness rule, as far as its public view shows it (servers/next skips stale nodes).
    if (n.ageSeconds > n.leaseSeconds) continue;
    online++;
    for (const id of n.capabilities.supported_model_ids) {
      const m = models.get(id) ?? { tiers: new Set<ContextTier>(), nodes: 0 };
      m.tiers.add(n.capabilities.active_context_tier);
      m.nodes++;
      models.set(id, m);
    }
  }
  const list = [...models.entries()]
    .map(([id, m]) => ({ id, context_tiers: [...m.tiers].sort((a, b) => CONTEXT_TIERS[a] - CONTEXT_TIERS[b]), nodes: m.nodes }))
    .sort((a, b) => b.nodes - a.nodes || a.id.localeCompare(b.id))
    .slice(0, MAX_STATUS_MODELS);
  return { nodes_online: online, queue_depth: stats.queued, in_flight: stats.inFlight, default_model: DEFAULT_MODEL, models: list };
}

/** `readPublicStatus` behind a short cache shared by every caller. */
export function cachedPublicStatus(store: V1Store, now: () => number = () => performance.now()) {
  let last: { at: number; value: Promise<PublicStatus> } | undefined;
  return (): Promise<PublicStatus> => {
    const t = now();
    if (!last || t - last.at >= STATUS_TTL_MS) {
      const value = readPublicStatus(store);
      last = { at: t, value };
      // A failed read is not cached: the next caller tries again.
      value.catch(() => {
        if (last?.value === value) last = undefined;
      });
    }
    return last.value;
  };
}
