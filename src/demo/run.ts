/**
 * `npm run demo`: a compute node and a client talk through a relay with the token.place API v1 E2EE
 * relay protocol, narrating what crossed the wire (ciphertext only as a length and a prefix; secrets
 * only as a length) and what each end decrypted. It shows one full exchange with encrypted progress,
 * then a request the client cancels while the node works on it, then the node unregistering.
 *
 * RELAY_URL=http://host:port uses a running relay; otherwise a relay child process is started on a
 * free loopback port (it inherits this environment). The node sends TOKEN_PLACE_RELAY_SERVER_TOKEN
 * (or the first of TOKEN_PLACE_RELAY_SERVER_TOKENS) as X-Relay-Server-Token, the relay's own setting.
 * Exit code 0 only when everything decrypted and ended as expected, 1 otherwise.
 */
import { createClient, type DemoClient, type Submitted } from "./client.ts";
import { fakeAnswer } from "./fake-model.ts";
import { preview, type Json, type WireRecord } from "./http.ts";
import { createComputeNode, type ComputeNode, type NodeEvent } from "./node.ts";
import { ROUTES, type ChatMessage, type Progress } from "./protocol.ts";
import { startRelay, type ChildServer } from "./relay-process.ts";

const t0 = performance.now();
const stamp = () => `[${((performance.now() - t0) / 1000).toFixed(3)}s]`;
const say = (who: string, text: string) => console.log(`${stamp()} ${who.padEnd(6)} ${text}`);
const ms = (from: number, to: number) => `${(to - from).toFixed(1)} ms`;
const seconds = (v: unknown) => (typeof v === "number" ? `${Math.round(v * 10) / 10} s` : String(v));
const clip = (text: string, n = 60) => JSON.stringify(text.length > n ? `${text.slice(0, n)}…` : text);
const shortId = (id: unknown) => (typeof id === "string" ? `${id.slice(0, 20)}…` : String(id));
const secret = (v: unknown) => (typeof v === "string" ? `${v.length} chars, kept secret` : "absent");
const envelope = (body: Json, field = "chat_history") =>
  `${field} ${preview(body[field])}, cipherkey ${preview(body.cipherkey, 12)}, iv ${preview(body.iv, 8)}`;

const wire: WireRecord[] = [];
/** Every prompt and answer in clear: none of them may ever appear in a body the relay handled. */
const plaintexts: string[] = [];
/** Ciphertexts the client sent and the node posted, to show the relay passed them on unchanged. */
const sentByClient = new Set<unknown>();
const postedByNode = new Set<unknown>();

/** Narrates the interesting bodies; empty long polls and plain "pending" polls are left out. */
function narrateWire(r: WireRecord): void {
  wire.push(r);
  const req = r.request ?? {};
  const res = r.response;
  const err = r.status >= 300 ? ` ${JSON.stringify(res)}` : "";
  switch (r.path) {
    case ROUTES.register: {
      const caps = req.capabilities as Json;
      say("wire", `node -> relay  POST servers/register ${r.status}: capabilities ${String(caps.supported_model_ids)} ${String(caps.active_context_tier)} (${String(caps.maximum_total_context_tokens)} tokens, max_concurrency ${String(caps.max_concurrency)}, ${String(caps.backend_class)})${err}`);
      if (r.status === 200)
        say("wire", `relay -> node  lease ${seconds(res.next_ping_in_x_seconds)}, poll_wait ${seconds(res.poll_wait_seconds)}, control_credential (${secret(res.control_credential)}), relay_capabilities ${JSON.stringify(res.relay_capabilities ?? null)}`);
      break;
    }
    case ROUTES.poll:
      if (typeof res.chat_history === "string")
        say("wire", `relay -> node  servers/poll work item ${shortId(res.request_id)}: ${envelope(res)}${sentByClient.has(res.chat_history) ? " (byte-for-byte what the client sent)" : ""}, request_ttl_seconds ${seconds(res.request_ttl_seconds)}`);
      else if (r.status !== 200) say("wire", `node -> relay  POST servers/poll ${r.status}${err}`);
      break;
    case ROUTES.control:
      say("wire", `node -> relay  POST servers/control ${r.status} for ${shortId(req.request_id)}${req.acknowledge ? " (acknowledge: true)" : ""}: status ${JSON.stringify(res.status)}, next_poll_seconds ${seconds(res.next_poll_seconds)}${err}`);
      break;
    case ROUTES.progress:
      say("wire", `node -> relay  POST progress ${r.status}: ${envelope(req, "ciphertext")}${err}`);
      break;
    case ROUTES.responses:
      postedByNode.add(req.chat_history);
      say("wire", `node -> relay  POST responses ${r.status}: ${Object.keys(req).length} keys, ${envelope(req)}${err}`);
      break;
    case ROUTES.unregister:
      say("wire", `node -> relay  POST servers/unregister ${r.status}: ${JSON.stringify(res)}`);
      break;
    case ROUTES.next:
      say("wire", `client -> relay GET servers/next ${r.status}: server_public_key ${preview(res.server_public_key, 20)}, tier ${String(res.selected_context_tier)}${err}`);
      break;
    case ROUTES.requests:
      sentByClient.add(req.chat_history);
      say("wire", `client -> relay POST requests ${r.status}: ${shortId(req.request_id)}, ${envelope(req)}, cancel_token (${secret(req.cancel_token)}); relay: request_ttl_seconds ${seconds(res.request_ttl_seconds)}${err}`);
      break;
    case ROUTES.retrieve: {
      const progress = res.encrypted_progress as Json | undefined;
      if (r.status === 202 && progress) say("wire", `relay -> client responses/retrieve 202 pending + encrypted_progress: ${envelope(progress, "ciphertext")}`);
      else if (r.status === 200)
        say("wire", `relay -> client responses/retrieve 200: ${envelope(res)}${postedByNode.has(res.chat_history) ? " (byte-for-byte what the node posted)" : ""}`);
      else if (r.status !== 202) say("wire", `relay -> client responses/retrieve ${r.status}: ${JSON.stringify(res)}`);
      break;
    }
    case ROUTES.cancel:
      say("wire", `client -> relay POST requests/cancel ${r.status}: ${shortId(req.request_id)}, cancel_token (${secret(req.cancel_token)}) -> ${JSON.stringify(res)}`);
      break;
  }
}

/** Node events, kept for the checks, and awaitable. */
function eventLog() {
  const seen: NodeEvent[] = [];
  const waiters = new Set<{ match: (e: NodeEvent) => boolean; resolve: (e: NodeEvent) => void }>();
  return {
    seen,
    push(e: NodeEvent) {
      seen.push(e);
      for (const w of waiters) if (w.match(e)) (waiters.delete(w), w.resolve(e));
    },
    waitFor<T extends NodeEvent["type"]>(type: T, match: (e: Extract<NodeEvent, { type: T }>) => boolean, signal: AbortSignal): Promise<Extract<NodeEvent, { type: T }>> {
      const test = (e: NodeEvent): e is Extract<NodeEvent, { type: T }> => e.type === type && match(e as Extract<NodeEvent, { type: T }>);
      const hit = seen.find(test);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const waiter = { match: test, resolve: (e: NodeEvent) => (signal.removeEventListener("abort", onAbort), resolve(e as Extract<NodeEvent, { type: T }>)) };
        const onAbort = () => (waiters.delete(waiter), reject(signal.reason));
        waiters.add(waiter);
        signal.addEventListener("abort", onAbort, { once: true });
      });
    },
  };
}

/** Aborted when the node cannot work at all, so nothing waits for it. */
const fatal = new AbortController();
const events = eventLog();
let progressAdvertised = false;

function narrateNode(e: NodeEvent): void {
  events.push(e);
  switch (e.type) {
    case "registered":
      progressAdvertised = e.progress;
      if (e.credentialIssued) say("node", "registered; keeps its control_credential (the proof it owns its jobs); now long-polls servers/poll");
      break;
    case "claimed":
      say("node", `decrypted job ${shortId(e.requestId)} with its private key: prompt ${clip(e.prompt)}`);
      break;
    case "progress":
      if (e.httpStatus === 202) say("node", `progress #${e.sequence} (phase ${e.phase}) was sealed for the client's key before it left`);
      else say("node", `progress #${e.sequence} refused (${e.httpStatus}): the request is no longer active, so no more progress for it`);
      break;
    case "stopped":
      say("node", `stopped job ${shortId(e.requestId)} (${e.status}): no answer posted`);
      break;
    case "error":
      say("node", `error: ${e.detail}`);
      if (e.httpStatus === 401) fatal.abort(new Error("the relay refused the node: set TOKEN_PLACE_RELAY_SERVER_TOKEN to the relay's token"));
      break;
  }
}

function check(ok: boolean, what: string): boolean {
  say("check", `${ok ? "OK" : "FAILED"}: ${what}`);
  return ok;
}

const conversation = (prompt: string): ChatMessage[] => [
  { role: "system", content: "You are a helpful assistant." },
  { role: "user", content: prompt },
];

const narrateProgress = (p: Progress) =>
  say("client", `decrypted progress #${p.sequence}: ${p.phase}, prompt ${p.processed_prompt_tokens}/${p.total_prompt_tokens}, generated ${p.generated_tokens}, ${p.elapsed_ms} ms`);

async function fullExchange(client: DemoClient, serverKey: string, signal: AbortSignal): Promise<boolean> {
  console.log("\n=== 1. A full exchange, with encrypted progress ===");
  const prompt = "please say this short sentence backwards";
  const messages = conversation(prompt);
  plaintexts.push(prompt, fakeAnswer(messages));
  say("client", `plaintext prompt: ${JSON.stringify(prompt)} (sealed for the node's key: RSA-OAEP-SHA256 + AES-256-CBC)`);
  const sub = await client.submit(serverKey, messages, signal);
  const progress: Progress[] = [];
  const outcome = await client.awaitAnswer(sub, {
    signal,
    onProgress: (p) => (progress.push(p), narrateProgress(p)),
  });
  const claimed = events.seen.find((e) => e.type === "claimed" && e.requestId === sub.requestId);
  const answer = outcome.kind === "answer" && "message" in outcome.response ? outcome.response : undefined;
  if (answer) {
    say("client", `decrypted answer: ${JSON.stringify(answer.message.content)} (finish_reason ${String(answer.finish_reason)}, usage ${JSON.stringify(answer.usage ?? null)})`);
  } else {
    say("client", `no answer: ${JSON.stringify(outcome)}`);
  }
  if (claimed) say("timing", `job claimed and decrypted by the node ${ms(sub.sentAt, claimed.at)} after POST requests (admitted in ${ms(sub.sentAt, sub.admittedAt)})`);
  say("timing", `answer decrypted ${ms(sub.sentAt, outcome.at)} after POST requests (${outcome.polls} retrieve poll(s))`);

  const active = events.seen.some((e) => e.type === "control" && e.requestId === sub.requestId && e.status === "active");
  const checks = [
    check(answer?.message.content === fakeAnswer(messages), "the client decrypted the expected answer"),
    check(claimed?.type === "claimed" && claimed.prompt === prompt && claimed.ciphertext === sub.sent.ciphertext, "the node decrypted the prompt from the very bytes the client sent"),
    check(active, "servers/control said the job was active for its owner"),
    progressAdvertised
      ? check(progress.length > 0, `the client decrypted ${progress.length} progress update(s)`)
      : check(!events.seen.some((e) => e.type === "progress"), "the relay does not advertise encrypted_progress_v1, so the node sent no progress"),
  ];
  return checks.every(Boolean);
}

async function cancelledExchange(client: DemoClient, serverKey: string, signal: AbortSignal): Promise<boolean> {
  console.log("\n=== 2. A request the client cancels while the node works on it ===");
  const prompt = Array.from({ length: 8 }, () => "tell me a long story about a relay that never reads its mail").join(" ");
  plaintexts.push(prompt, fakeAnswer(conversation(prompt)));
  say("client", `plaintext prompt: ${prompt.split(" ").length} words (a long job for the node)`);
  const sub: Submitted = await client.submit(serverKey, conversation(prompt), signal);
  let working!: () => void;
  const seenWorking = new Promise<void>((resolve) => (working = resolve));
  const pending = client.awaitAnswer(sub, { signal, onProgress: (p) => (narrateProgress(p), working()) });
  pending.catch(() => undefined); // awaited below; this only keeps an early failure from going unhandled
  // Cancel once the job is surely in flight: the client saw its progress, or (without progress) the node checked in.
  if (progressAdvertised) await Promise.race([seenWorking, pending]);
  else await events.waitFor("control", (e) => e.requestId === sub.requestId && e.status === "active", signal);
  say("client", "changes its mind: cancels with the cancel_token only it knows");
  const cancelled = await client.cancel(sub, signal);
  const stopped = await events.waitFor("stopped", (e) => e.requestId === sub.requestId, signal);
  const outcome = await pending;
  if (outcome.kind === "ended") say("client", `the relay reports the request ${outcome.status} (reason ${outcome.reason})`);

  const controls = events.seen.filter((e): e is Extract<NodeEvent, { type: "control" }> => e.type === "control" && e.requestId === sub.requestId);
  const checks = [
    check(cancelled.status === "cancelled" && cancelled.removed_from_queue === 0, "requests/cancel took the in-flight request (removed_from_queue 0)"),
    check(controls.some((e) => e.status === "cancelled" && !e.acknowledge) && stopped.status === "cancelled", "the node's next control check said cancelled, and it stopped"),
    check(controls.some((e) => e.acknowledge), "the node acknowledged the cancellation"),
    check(!events.seen.some((e) => e.type === "answered" && e.requestId === sub.requestId), "the node posted no answer for it"),
    check(outcome.kind === "ended" && outcome.status === "cancelled", "the client's retrieve ended with 410 cancelled"),
  ];
  return checks.every(Boolean);
}

async function main(): Promise<number> {
  let relay: ChildServer | undefined;
  let node: ComputeNode | undefined;
  try {
    let url = process.env.RELAY_URL;
    if (url) {
      say("relay", `using the running relay at ${url}`);
    } else {
      relay = await startRelay();
      url = relay.url;
      say("relay", `started a relay child process (pid ${relay.pid}) at ${url}`);
    }
    const token = process.env.TOKEN_PLACE_RELAY_SERVER_TOKEN || process.env.TOKEN_PLACE_RELAY_SERVER_TOKENS?.split(/[,\n]/)[0]?.trim();
    const signal = AbortSignal.any([fatal.signal, AbortSignal.timeout(60_000)]);

    console.log("\n=== 0. The node registers, the client picks it ===");
    node = await createComputeNode({ relayUrl: url, ...(token ? { token } : {}), stepMs: 150, wireTap: narrateWire, onEvent: narrateNode });
    say("node", `generated an RSA-2048 key pair; public key (base64 PEM) ${preview(node.publicKeyB64, 20)}${token ? "; sends X-Relay-Server-Token" : ""}`);
    node.start();
    const registration = AbortSignal.any([signal, AbortSignal.timeout(10_000)]);
    await events.waitFor("registered", () => true, registration).catch(() => {
      throw new Error(`the node did not register within 10 s (last error: ${node?.stats.lastError ?? "none"})`);
    });
    const client = await createClient({ relayUrl: url, wireTap: narrateWire });
    say("client", `generated its own key pair; public key ${preview(client.publicKeyB64, 20)}`);
    // A shared relay may hold other nodes; its round robin comes to ours within a few asks.
    let serverKey = "";
    for (let ask = 1; ask <= 8 && serverKey !== node.publicKeyB64; ask++) {
      if (ask > 1) say("client", "the relay chose another registered node; asking again");
      serverKey = String((await client.pickNode(signal)).server_public_key);
    }
    if (!check(serverKey === node.publicKeyB64, "servers/next returned the demo node's key exactly as registered")) return 1;

    const ok1 = await fullExchange(client, serverKey, signal);
    const ok2 = await cancelledExchange(client, serverKey, signal);

    console.log("\n=== 3. The node leaves ===");
    await node.stop();
    const left = check(events.seen.some((e) => e.type === "unregistered" && e.httpStatus === 200), "servers/unregister accepted the node's credential");
    const leaks = wire.filter((r) => plaintexts.some((s) => JSON.stringify([r.request ?? null, r.response]).includes(s)));
    const blind = check(leaks.length === 0, `none of the ${wire.length} bodies the relay received or returned contained a prompt or an answer`);

    const ok = ok1 && ok2 && left && blind;
    console.log(`\n${ok ? "Demo passed" : "Demo FAILED"} in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
    return ok ? 0 : 1;
  } catch (err) {
    const cause = fatal.signal.aborted ? fatal.signal.reason : err;
    console.error(`demo failed: ${cause instanceof Error ? cause.message : String(cause)}`);
    if (relay) console.error(`relay output (last lines):\n${relay.output.slice(-10).join("\n")}`);
    return 1;
  } finally {
    await node?.stop();
    await relay?.stop();
  }
}

process.exitCode = await main();
