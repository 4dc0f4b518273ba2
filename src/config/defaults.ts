// Embedded defaults. Every one is documented in README.md ("Configuration"); a test keeps the two in step.

export const DEFAULT_HOST = "0.0.0.0";
/** The port token.place's reference relay listens on; compute nodes are configured with it. */
export const DEFAULT_PORT = 5010;
/** server.py's default port on the GPU workstation. */
export const DEFAULT_GPU_PORT = 3000;
/** In Kubernetes an ExternalName Service of this name points at the GPU workstation. */
export const DEFAULT_GPU_HOST = "gpu-server";
export const DEFAULT_UPSTREAM_URL = `http://${DEFAULT_GPU_HOST}:${DEFAULT_GPU_PORT}`;
export const DEFAULT_LOG_LEVEL = "info";

/** Held /sink, /retrieve and /stream/retrieve requests answer after at most this long. */
export const DEFAULT_LONG_POLL_MS = 5_000;
/** Peers' HTTP clients give up after 10 s: a hold must stay clearly below that. */
export const MAX_LONG_POLL_MS = 9_000;
/** A shorter hold would have nodes re-polling in a tight loop (each held poll answers "0"). */
export const MIN_LONG_POLL_MS = 1_000;
/** What the reference relay tells an idle node when the relay did not hold the poll. */
export const DEFAULT_NEXT_PING_SECONDS = 10;
export const DEFAULT_MAX_LONG_POLLS = 1_000;

export const DEFAULT_MAX_QUEUE_DEPTH = 64;
export const DEFAULT_MAX_BATCH_SIZE = 16;
export const DEFAULT_MAX_NODES = 1_000;
export const DEFAULT_MAX_ANSWERS = 10_000;
export const DEFAULT_MAX_STREAM_SESSIONS = 1_000;
export const DEFAULT_MAX_STREAM_CHUNKS = 4_096;

export const DEFAULT_NODE_STALE_MS = 30_000;
export const DEFAULT_ANSWER_TTL_MS = 300_000;
/** Queued jobs expire this long after /faucet, also while their node is briefly stale (busy). */
export const DEFAULT_JOB_TTL_MS = 300_000;
export const DEFAULT_STREAM_TTL_MS = 300_000;
export const DEFAULT_SWEEP_INTERVAL_MS = 1_000;

export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024;
export const DEFAULT_IDLE_TIMEOUT_SECONDS = 30;

export const DEFAULT_SHUTDOWN_DELAY_MS = 0;
export const DEFAULT_SHUTDOWN_GRACE_MS = 20_000;
export const DEFAULT_DNS_CACHE_MS = 5_000;

// API v1 E2EE relay protocol (token.place relay.py's variables and defaults; spec §4).

/** Registration lease: a node silent this long (and not held in a poll) is stale. */
export const DEFAULT_V1_LEASE_SECONDS = 30;
/** Longest hold of servers/poll, sent as poll_wait_seconds; the node's own timeout is >= this + 5 s. */
export const DEFAULT_V1_POLL_WAIT_SECONDS = 10;
/** Longest poll_wait_seconds accepted: a node's poll timeout grows with it, and a held socket costs memory. */
export const MAX_V1_POLL_WAIT_SECONDS = 120;
/** Absolute per-request deadline from admission; the node's inference budget is 480 s. */
export const DEFAULT_V1_REQUEST_DEADLINE_SECONDS = 480;
export const DEFAULT_V1_REQUEST_DEADLINE_MIN_SECONDS = 1;
export const DEFAULT_V1_REQUEST_DEADLINE_MAX_SECONDS = 3_600;
/** How long a node can read "cancelled"/"expired" for work it held (spec §7.5). */
export const DEFAULT_V1_TOMBSTONE_TTL_SECONDS = 60;
/** How long a cancelled/expired/completed request is remembered (410 instead of 404). */
export const DEFAULT_V1_TERMINAL_TTL_SECONDS = 300;
/** Requests without a request_id have no deadline upstream; here they expire after this. */
export const DEFAULT_V1_PENDING_TTL_SECONDS = 300;
/** A node with this many queued requests is not selected, and its queue refuses more (429). */
export const DEFAULT_V1_MAX_QUEUE_DEPTH_PER_NODE = 1_024;
/**
 * Hold of responses/retrieve until the answer (or a progress update) arrives. client.py's HTTP
 * timeout per retrieve is 10 s: answer 2 s before it so the answer never goes to a closed socket.
 */
export const DEFAULT_V1_RETRIEVE_HOLD_MS = 8_000;
/** Live tracked requests (queued or in flight) across all nodes; beyond: 503 requests_full. */
export const DEFAULT_V1_MAX_REQUESTS = 10_000;

// Shared state (Valkey/Redis).

/** Prefix of every key and channel: several relays or environments can share one Valkey. */
export const DEFAULT_REDIS_KEY_PREFIX = "tokenplace-relay:";
/** A datastore call without an answer this long fails with 503 state_unavailable (never a hang). */
export const DEFAULT_REDIS_COMMAND_TIMEOUT_MS = 2_000;

// Memory budget (src/config/memory.ts): the relay's whole memory ceiling, split into shares.

/**
 * Share of the container's memory limit the relay's resident memory may reach by default. The
 * kernel charges the pod more than the process's RSS (socket buffers of every connection, page
 * cache of the binary), so a quarter stays outside: with the chart's 512 Mi limit on a Pi the
 * ceiling is 384 MiB.
 */
export const MEMORY_BUDGET_SHARE_OF_LIMIT = 0.75;
/** A budget set by hand may not exceed this share of the container limit (exit 2 otherwise). */
export const MAX_MEMORY_BUDGET_SHARE = 0.9;
/** Without a container limit (a laptop, a bare binary): the reference pod's 512 MiB. */
export const DEFAULT_MEMORY_BUDGET_BYTES = 512 * 1024 * 1024;
/**
 * The runtime's own share, taken off the top: the compiled binary's resident size when idle
 * (measured 58-60 MiB on x64, Bun 1.4.5: code pages, JavaScriptCore, mimalloc arenas) and a little
 * for bookkeeping (nodes, holds, rate-limit counters). The rest is the working memory.
 */
export const MEMORY_RUNTIME_RESERVE_BYTES = 64 * 1024 * 1024;
/** Smallest budget: the runtime's reserve plus 32 MiB of working memory. */
export const MIN_MEMORY_BUDGET_BYTES = MEMORY_RUNTIME_RESERVE_BYTES + 32 * 1024 * 1024;
/** Share of the working memory for stored payloads (queued requests and jobs, answers, progress, chunks). */
export const MEMORY_STORED_SHARE = 0.5;
/**
 * Share of the working memory for request bodies being read, counted at MEMORY_BODY_COST_MULTIPLE
 * times their size. The rest (a quarter) is headroom for garbage the collector has not reclaimed
 * yet; the memory guard works inside it.
 */
export const MEMORY_BODY_SHARE = 0.25;
/**
 * What one byte of a request body being read costs at its peak: Bun's body buffer, the decoded
 * text and the parsed object's strings are alive together (three copies), plus the allocator's
 * slack for buffers this large (docs/security.md, "Memory", has the measurements).
 */
export const MEMORY_BODY_COST_MULTIPLE = 4;
/** With legacy routes on, the legacy protocol's stores get this share of the stored-payload share, API v1 the rest. */
export const LEGACY_MEMORY_BUDGET_SHARE = 0.25;
/**
 * How often the memory guard samples RSS while memory is in play (~20 us a read of
 * /proc/self/statm, so ~0.1% of a core): past half the collect level, while it refuses bodies, or
 * while many requests are open.
 */
export const MEMORY_GUARD_INTERVAL_MS = 20;
/**
 * How often it samples otherwise. Far below the collect level RSS cannot reach it between two
 * samples: the fast growth (large bodies) is sampled after each body read anyway, and a crowd of
 * small requests counts as busy once its open requests pass SHRINK_LOW_REQUESTS. Sampling every
 * 20 ms at idle was 50 wake-ups a second for nothing, on a Pi that otherwise sleeps.
 */
export const MEMORY_GUARD_IDLE_INTERVAL_MS = 250;
/**
 * Bodies at least this large declared (and chunked bodies, whose size is unknown) are refused
 * while the guard sheds; smaller ones pass, so held polls, retrieves and small requests go on.
 * Real keys are ~600 characters and a poll or retrieve body stays far below this.
 */
export const MEMORY_GUARD_SMALL_BODY_BYTES = 64 * 1024;
/**
 * Past the collect level a full collection is forced once RSS has grown this share of the headroom
 * since the last one ended (what stays after a collection is live: collecting again without growth
 * would only pause the one JS thread), and at most every MEMORY_GUARD_GC_MIN_INTERVAL_MS: a flood
 * of 4 MiB bodies adds tens of MiB of garbage per 250 ms, so waiting on a timer lets RSS run on.
 */
export const MEMORY_GUARD_GC_GROWTH_SHARE = 1 / 8;
export const MEMORY_GUARD_GC_MIN_INTERVAL_MS = 50;

// Rate limits (token.place API v1 relay spec §11; upstream's variables, defaults and limit syntax).

/** API_RATE_LIMIT: public quota per client address and route (requests, requests/cancel, legacy /faucet). */
export const DEFAULT_API_RATE_LIMIT = "60/hour";
/** API_DAILY_QUOTA: a second public quota over a day, per client address and route. */
export const DEFAULT_API_DAILY_QUOTA = "1000/day";
/** API_RELAY_CONTROL_PLANE_<ROUTE>_RATE_LIMIT: compute-node routes, per route and node identity. */
export const DEFAULT_CONTROL_PLANE_RATE_LIMITS = {
  register: "240/hour",
  unregister: "240/hour",
  poll: "1200/hour",
  control: "1200/hour",
  responses: "1200/hour",
  progress: "7200/hour",
} as const;
/** API_RELAY_CONTROL_PLANE_IP_RATE_LIMIT: compute-node routes, per route and client address. */
export const DEFAULT_CONTROL_PLANE_IP_RATE_LIMIT = "10000/hour";
/**
 * RELAY_AUTH_FAILURE_LIMIT: wrong or missing registration tokens per client address (all node
 * routes together); beyond, every node route from that address answers 429 until the window ends,
 * so a token cannot be guessed at full speed. A node with the right token never fails.
 */
export const DEFAULT_AUTH_FAILURE_LIMIT = "10/minute";

// Request bounds (src/config/bounds.ts): what one hostile client, or many, may make the relay hold.

/**
 * Requests served at once (Bun's server.pendingRequests, held long-polls and proxied streams
 * included); beyond, new requests answer 503 busy before their body is read. Probes are exempt.
 */
export const DEFAULT_MAX_CONNECTIONS = 4_096;
/**
 * Held long-polls per client address, per budget (compute nodes and clients are counted apart);
 * beyond, a poll answers at once as if holds were off. One node holds one poll, one browser one
 * retrieve: 32 leaves room for NAT while one address cannot take the whole RELAY_MAX_LONG_POLLS.
 */
export const DEFAULT_MAX_HOLDS_PER_IP = 32;
/**
 * Requests past RELAY_MAX_CONNECTIONS that node routes may still bring, as a share of it: compute
 * nodes' polls and answers are never refused because clients fill the cap. Counted only where a
 * registration token is configured: the token is checked before the body is read or the poll held,
 * so a client naming a node route with a wrong token is answered 401 at once and holds nothing.
 */
export const NODE_CONNECTION_HEADROOM_SHARE = 0.25;
/**
 * Share of RELAY_MAX_INFLIGHT_BODY_BYTES one client address may have reserved at once (never less
 * than one RELAY_MAX_BODY_BYTES): a few slow uploads from one address cannot hold the whole pool.
 */
export const BODY_BUDGET_ADDRESS_SHARE = 0.25;
/**
 * Share of RELAY_MAX_INFLIGHT_BODY_BYTES client routes can never take: kept for node routes'
 * bodies (answers, progress, stream chunks), so clients' uploads never starve accepted work.
 * Client routes get at least one RELAY_MAX_BODY_BYTES even when the pool is that small.
 */
export const BODY_BUDGET_NODE_SHARE = 0.25;
/**
 * Bodies at most this large are never refused for lack of body pool and reserve nothing: registers,
 * polls, retrieves and cancels (keys of ~600 characters) always go on. What they can make the relay
 * hold is bounded by RELAY_MAX_CONNECTIONS and watched by the memory guard (the same threshold as
 * MEMORY_GUARD_SMALL_BODY_BYTES, below which the guard lets bodies pass too).
 */
export const BODY_BUDGET_SMALL_BYTES = MEMORY_GUARD_SMALL_BODY_BYTES;
/**
 * Client polls (legacy retrieves, API v1 responses/retrieve) paced at once per address
 * (src/common/pacing.ts), as a share of the pace pool (RELAY_MAX_CONNECTIONS paces, not counted
 * against RELAY_MAX_CONNECTIONS itself); beyond, such a poll is answered at once with
 * `Connection: close`, so one address cannot fill the pool.
 * A share, not a multiple of RELAY_MAX_HOLDS_PER_IP: a paced connection costs a pending promise,
 * while each one closed past the cap reconnects at once, and a crowd of them reconnecting in bursts
 * overflowed the listen queue (SYN retransmits: a node's dispatch delayed by a whole second).
 */
export const PACED_POLLS_ADDRESS_SHARE = 0.5;
/**
 * Largest body of the routes whose valid bodies are small (polls, retrieves, register, control,
 * unregister, cancel: keys bounded at 8,192 characters, ids at 256, capabilities at 64 model ids of
 * 128): 64 KiB is several times the largest valid one. A larger declared Content-Length is refused
 * `413 route_body_too_large` before a byte is read and a chunked body is cut there: a flood of 1 MB
 * keys on a retrieve route used to be read whole (RELAY_MAX_BODY_BYTES) and only then refused.
 */
export const SMALL_ROUTE_MAX_BODY_BYTES = 64 * 1024;
/** Longest request target (path and query); beyond: 414 uri_too_long. */
export const DEFAULT_MAX_URL_BYTES = 8_192;
/** Largest sum of header fields (name, value, ": " and CRLF each); beyond: 431 headers_too_large. */
export const DEFAULT_MAX_HEADER_BYTES = 8_192;
/**
 * Longest time to receive a whole request body, counted from the request's arrival (relay routes
 * and proxied uploads alike); beyond: 408 body_timeout. The connection's idle timeout is held for
 * this long while the body arrives (src/http/body-budget.ts holdForBody): a trickle would otherwise
 * keep a connection forever (one byte every few seconds) or be cut without an answer (uWebSockets
 * stops resetting its idle timer below 16 KB/s). 60 s is ~70 KB/s for a 4 MiB body.
 */
export const DEFAULT_BODY_TIMEOUT_MS = 60_000;
/**
 * Proxied requests per client address whose body is still being uploaded; beyond: 429
 * too_many_uploads. The upload, not the response, holds the slot, so long SSE answers do not count.
 */
export const DEFAULT_PROXY_MAX_UPLOADS_PER_IP = 16;
/**
 * Bun's own limit on a request head (request line plus header fields; `--max-http-header-size`,
 * Bun 1.4.5): larger heads get an empty `431` and a closed connection before the relay sees them,
 * as do heads of more than about 200 fields. The relay's URL and header limits must stay below it
 * to ever answer in JSON.
 */
export const BUN_MAX_HEAD_BYTES = 16_384;
