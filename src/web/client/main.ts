/**
 * The chat page (served by the relay at `/`). One conversation, kept in this tab's memory only:
 * never in storage, cookies or the URL. Each message goes out as one API v1 relay request sealed
 * for the node that servers/next picks; the answer comes back sealed for this page's own key.
 * Every failure ends in one plain sentence and the typed text back in the box, ready to resend.
 *
 * Text reaches the document through textContent only (the page's CSP enforces Trusted Types
 * with no policy, so an HTML sink would throw).
 */
import { isProgressPlaintext, isResponsePlaintext, type ChatMessage, type Progress } from "../../demo/protocol.ts";
import { createClientKeys, openFromNode, randomHex, sealForNode, type ClientKeys } from "./crypto.ts";
import {
  cancelRequest,
  fetchStatus,
  Problem,
  PROTOCOL,
  queueRequest,
  retrieveOnce,
  selectNode,
  tierLabel,
  VERSION,
  type PublicStatus,
} from "./relay.ts";

const STATUS_EVERY_MS = 10_000;
/** Consecutive network failures while waiting for an answer before giving up. */
const MAX_RETRIEVE_FAILURES = 4;
/**
 * Least time between two retrieves. The relay holds each one until something happens, so this
 * only matters when it does not (RELAY_V1_RETRIEVE_HOLD_MS=0, or a stream of progress updates):
 * the page then asks twice a second at most instead of in a tight loop.
 */
const MIN_RETRIEVE_SPACING_MS = 500;

/**
 * How long a message waits for a busy node (servers/next: no_available_capacity) before the page
 * says so: a node serving one request at a time is often free again in moments.
 */
const BUSY_WAIT_MS = 20_000;

/** Resolves after `ms`, or at once when the turn is cancelled. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}

const $ = <T extends HTMLElement>(id: string) => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`page element #${id} is missing`);
  return el as T;
};

const ui = {
  status: $<HTMLParagraphElement>("status"),
  model: $<HTMLSelectElement>("model"),
  tier: $<HTMLSelectElement>("tier"),
  newChat: $<HTMLButtonElement>("new-chat"),
  empty: $<HTMLParagraphElement>("empty"),
  log: $<HTMLOListElement>("log"),
  progress: $<HTMLParagraphElement>("progress"),
  problem: $<HTMLDivElement>("problem"),
  problemText: $<HTMLParagraphElement>("problem-text"),
  retry: $<HTMLButtonElement>("retry"),
  form: $<HTMLFormElement>("composer"),
  prompt: $<HTMLTextAreaElement>("prompt"),
  send: $<HTMLButtonElement>("send"),
  cancel: $<HTMLButtonElement>("cancel"),
};

interface Turn {
  abort: AbortController;
  cancelled: boolean;
  /** Set once the request is queued: what a cancel needs. */
  sent?: { requestId: string; cancelToken: string; clientKey: string };
}

/** The finished exchanges, oldest first: the `messages` of the next request. Page memory only. */
const conversation: ChatMessage[] = [];
let active: Turn | undefined;
let status: PublicStatus | undefined;
let sendBlockedUntil = 0;
let countdown: ReturnType<typeof setInterval> | undefined;

const keys: Promise<ClientKeys> = (async () => {
  if (!globalThis.isSecureContext || !globalThis.crypto?.subtle) {
    throw new Problem(
      "insecure_context",
      "This page can only encrypt over a secure connection: open it with https:// (or on localhost). Nothing was sent.",
    );
  }
  return createClientKeys();
})();
keys.catch(() => {}); // reported when someone sends

// ------------------------------------------------------------------------------ rendering

function appendMessage(role: "user" | "assistant", text: string): HTMLLIElement {
  const li = document.createElement("li");
  li.className = `msg ${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Assistant";
  const body = document.createElement("p");
  body.className = "text";
  body.textContent = text;
  li.append(who, body);
  ui.log.append(li);
  ui.empty.hidden = true;
  li.scrollIntoView({ block: "nearest" });
  return li;
}

function showProgress(text: string | undefined): void {
  ui.progress.hidden = text === undefined;
  ui.progress.textContent = text ?? "";
}

function showProblem(p: Problem | undefined): void {
  ui.problem.hidden = p === undefined;
  ui.problemText.textContent = p?.message ?? "";
  ui.retry.hidden = p === undefined || p.kind === "insecure_context" || p.kind === "rate_limited";
}

function setBusy(busy: boolean): void {
  ui.cancel.disabled = !busy;
  ui.send.disabled = busy || Date.now() < sendBlockedUntil;
  ui.log.setAttribute("aria-busy", String(busy));
}

/** After a 429 with Retry-After: Send waits, counting down on its own label. */
function blockSendFor(seconds: number): void {
  sendBlockedUntil = Date.now() + seconds * 1000;
  clearInterval(countdown);
  const tick = () => {
    const left = Math.ceil((sendBlockedUntil - Date.now()) / 1000);
    if (left <= 0) {
      clearInterval(countdown);
      ui.send.textContent = "Send";
      ui.send.disabled = active !== undefined;
      return;
    }
    ui.send.textContent = `Send (${left} s)`;
    ui.send.disabled = true;
  };
  tick();
  countdown = setInterval(tick, 1000);
}

function describeProgress(p: Progress): string {
  if (p.phase === "prefill" && p.total_prompt_tokens > 0) {
    return `The node is reading the conversation: ${p.processed_prompt_tokens} of ${p.total_prompt_tokens} tokens.`;
  }
  if (p.phase === "generating") return `The node is writing: ${p.generated_tokens} tokens so far.`;
  return "The node is getting ready…";
}

// ------------------------------------------------------------------------------ status strip and pickers

/** Replaces a picker's options, unless they are the same (an open list is not disturbed every poll). */
function fillSelect(select: HTMLSelectElement, options: { value: string; label: string }[]): void {
  const signature = JSON.stringify(options);
  if (select.dataset.options === signature) return;
  select.dataset.options = signature;
  const keep = select.value;
  select.replaceChildren(
    ...options.map((o) => {
      const opt = document.createElement("option");
      opt.value = o.value;
      opt.textContent = o.label;
      return opt;
    }),
  );
  if (options.some((o) => o.value === keep)) select.value = keep;
}

function renderPickers(): void {
  const models = status?.models ?? [];
  const fallback = status?.default_model ?? "qwen3-8b-instruct";
  fillSelect(
    ui.model,
    models.length > 0
      ? models.map((m) => ({ value: m.id, label: `${m.id} (${m.nodes === 1 ? "1 node" : `${m.nodes} nodes`})` }))
      : [{ value: fallback, label: `${fallback} (no node online)` }],
  );
  renderTiers();
}

function renderTiers(): void {
  const model = status?.models.find((m) => m.id === ui.model.value);
  const tiers = model && model.context_tiers.length > 0 ? model.context_tiers : ["8k-fast"];
  fillSelect(ui.tier, tiers.map((t) => ({ value: t, label: tierLabel(t) })));
}

function renderStatus(): void {
  if (!status) return;
  const n = status.nodes_online;
  const parts =
    n === 0
      ? ["No compute node online"]
      : [`${n} ${n === 1 ? "node" : "nodes"} online`, `${status.models.length} ${status.models.length === 1 ? "model" : "models"}`, `queue ${status.queue_depth}`];
  if (status.in_flight > 0) parts.push(`${status.in_flight} answering`);
  setText(ui.status, parts.join(" · "));
}

/** Live regions announce changes: text that did not change is not written again. */
function setText(el: HTMLElement, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}

async function refreshStatus(): Promise<void> {
  try {
    status = await fetchStatus();
    renderStatus();
    renderPickers();
  } catch (err) {
    setText(ui.status, err instanceof Problem && err.kind === "unreachable" ? "Relay unreachable" : "Relay status unavailable");
  }
}

// ------------------------------------------------------------------------------ one exchange

const cancelledProblem = () => new Problem("cancelled", "Cancelled. Nothing more will arrive for that message; it is back in the box below.");

async function openProgress(k: ClientKeys, requestId: string, outer: unknown, last: number): Promise<Progress | undefined> {
  if (outer === null || typeof outer !== "object") return undefined;
  const o = outer as Record<string, unknown>;
  if (o.request_id !== requestId || o.client_public_key !== k.publicKeyB64) return undefined;
  if (typeof o.ciphertext !== "string" || typeof o.cipherkey !== "string" || typeof o.iv !== "string") return undefined;
  try {
    const plain: unknown = JSON.parse(await openFromNode(k, { ciphertext: o.ciphertext, cipherkey: o.cipherkey, iv: o.iv }));
    return isProgressPlaintext(plain, requestId, k.publicKeyB64, last) ? plain.api_v1_progress : undefined;
  } catch {
    return undefined; // progress is best effort: never changes the outcome
  }
}

/** servers/next, waiting (a while, cancellably) while every matching node is busy. */
async function selectFreeNode(turn: Turn, model: string, tier: string) {
  const giveUpAt = Date.now() + BUSY_WAIT_MS;
  for (let delay = 500; ; delay = Math.min(delay * 2, 4_000)) {
    try {
      return await selectNode(model, tier);
    } catch (err) {
      if (!(err instanceof Problem && err.kind === "busy") || turn.cancelled || Date.now() + delay > giveUpAt) throw err;
    }
    showProgress("Every node for this model is busy; waiting for one to be free…");
    await pause(delay, turn.abort.signal);
    if (turn.cancelled) throw cancelledProblem();
  }
}

async function exchange(turn: Turn, text: string, model: string, tier: string): Promise<string> {
  const k = await keys;
  showProgress("Finding a node…");
  const node = await selectFreeNode(turn, model, tier);
  if (turn.cancelled) throw cancelledProblem();

  showProgress("Encrypting in this tab…");
  const requestId = `web-${randomHex()}`;
  const cancelToken = randomHex(24);
  const messages: ChatMessage[] = [...conversation, { role: "user", content: text }];
  const sealed = await sealForNode(
    node.serverPublicKey,
    JSON.stringify({
      protocol: PROTOCOL,
      version: VERSION,
      request_id: requestId,
      client_public_key: k.publicKeyB64,
      api_v1_request: { model, messages, options: {}, routing: { context_tier: tier } },
    }),
  );
  const queued = await queueRequest({
    server_public_key: node.serverPublicKey,
    client_public_key: k.publicKeyB64,
    chat_history: sealed.ciphertext,
    cipherkey: sealed.cipherkey,
    iv: sealed.iv,
    request_id: requestId,
    cancel_token: cancelToken,
  });
  turn.sent = { requestId, cancelToken, clientKey: k.publicKeyB64 };
  if (turn.cancelled) {
    await cancelRequest(k.publicKeyB64, requestId, cancelToken);
    throw cancelledProblem();
  }

  showProgress("Sent, encrypted. Waiting for the node…");
  const giveUpAt = Date.now() + (queued.ttlSeconds + 5) * 1000;
  let lastSequence = -1;
  let failures = 0;
  for (;;) {
    if (Date.now() > giveUpAt) {
      await cancelRequest(k.publicKeyB64, requestId, cancelToken);
      throw new Problem("expired", "No node answered in time, so the page stopped waiting. Send again.");
    }
    let outcome;
    const started = performance.now();
    try {
      outcome = await retrieveOnce(k.publicKeyB64, requestId, turn.abort.signal);
      failures = 0;
    } catch (err) {
      if (turn.cancelled) throw cancelledProblem();
      if (err instanceof Problem && err.kind === "unreachable" && ++failures < MAX_RETRIEVE_FAILURES) {
        showProgress("Lost the relay for a moment; trying again…");
        await pause(1000 * 2 ** (failures - 1), turn.abort.signal);
        continue;
      }
      throw err;
    }
    if (turn.cancelled) throw cancelledProblem();
    if (outcome.kind === "pending") {
      const p = outcome.progress === undefined ? undefined : await openProgress(k, requestId, outcome.progress, lastSequence);
      if (p) {
        lastSequence = p.sequence;
        showProgress(describeProgress(p));
      }
      await pause(MIN_RETRIEVE_SPACING_MS - (performance.now() - started), turn.abort.signal);
      continue;
    }
    let plain: unknown;
    try {
      const e = outcome.envelope;
      plain = JSON.parse(await openFromNode(k, { ciphertext: e.chat_history, cipherkey: e.cipherkey, iv: e.iv }));
    } catch {
      plain = undefined;
    }
    // Bound to this request and this key inside the ciphertext, or it is not our answer.
    if (!isResponsePlaintext(plain, requestId, k.publicKeyB64)) {
      throw new Problem("decryption_failed", "An answer arrived but could not be decrypted with this tab's key, so it was discarded. Send again.");
    }
    const r = plain.api_v1_response;
    if ("error" in r) {
      const why = typeof r.error.message === "string" && r.error.message.trim() ? r.error.message.trim() : r.error.code;
      throw new Problem("node_error", `The node could not answer: ${why}. Send again, or pick another model or context size.`);
    }
    return r.message.content;
  }
}

async function send(): Promise<void> {
  if (active || Date.now() < sendBlockedUntil) return;
  const text = ui.prompt.value.trim();
  if (!text) {
    ui.prompt.focus();
    return;
  }
  const model = ui.model.value;
  const tier = ui.tier.value || "8k-fast";
  showProblem(undefined);
  const turn: Turn = { abort: new AbortController(), cancelled: false };
  active = turn;
  const mine = appendMessage("user", text);
  ui.prompt.value = "";
  setBusy(true);
  try {
    const answer = await exchange(turn, text, model, tier);
    conversation.push({ role: "user", content: text }, { role: "assistant", content: answer });
    appendMessage("assistant", answer);
  } catch (err) {
    const problem =
      err instanceof Problem ? err : turn.cancelled ? cancelledProblem() : new Problem("unexpected", "Something went wrong in this page. Send again.");
    // The message never made it into the conversation: take it out and give the text back.
    mine.remove();
    ui.empty.hidden = ui.log.childElementCount > 0;
    if (!ui.prompt.value) ui.prompt.value = text;
    showProblem(problem);
    if (problem.kind === "rate_limited" && problem.retryAfterSeconds !== undefined) blockSendFor(problem.retryAfterSeconds);
  } finally {
    if (active === turn) active = undefined;
    showProgress(undefined);
    setBusy(false);
    ui.prompt.focus();
    void refreshStatus();
  }
}

async function cancel(): Promise<void> {
  const turn = active;
  if (!turn || turn.cancelled) return;
  turn.cancelled = true;
  ui.cancel.disabled = true;
  showProgress("Cancelling…");
  // Stop waiting first (the held retrieve), then tell the relay with the proof only this tab has.
  turn.abort.abort();
  if (turn.sent) await cancelRequest(turn.sent.clientKey, turn.sent.requestId, turn.sent.cancelToken);
}

// ------------------------------------------------------------------------------ wiring

ui.form.addEventListener("submit", (e) => {
  e.preventDefault();
  void send();
});
ui.prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.ctrlKey && !e.altKey && !e.metaKey && !e.isComposing) {
    e.preventDefault();
    void send();
  } else if (e.key === "Escape" && active) {
    e.preventDefault();
    void cancel();
  }
});
ui.cancel.addEventListener("click", () => void cancel());
ui.retry.addEventListener("click", () => void send());
ui.model.addEventListener("change", renderTiers);
ui.newChat.addEventListener("click", () => {
  void cancel();
  conversation.length = 0;
  ui.log.replaceChildren();
  ui.empty.hidden = false;
  showProblem(undefined);
  ui.prompt.focus();
});
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") void refreshStatus();
});
setInterval(() => {
  if (document.visibilityState === "visible") void refreshStatus();
}, STATUS_EVERY_MS);

renderPickers();
void refreshStatus();
ui.prompt.focus();
