/**
 * The demo's stand-in for an LLM: deterministic, and obviously "processed" so a reader can see the
 * node really decrypted the prompt (it answers with the last user message's words reversed). It
 * takes time like a real model (a prefill over the prompt, then one word per step) so that progress
 * and cancellation have something to report and to interrupt. Words stand in for tokens.
 */
import { NODE_CAPABILITIES, type ApiV1Answer, type ApiV1Request, type ChatMessage, type ProgressCounters } from "./protocol.ts";

export interface FakeModelOptions {
  /** Time per step: one generated word, or one prefill chunk. */
  stepMs: number;
  /** Aborting stops the model between steps (the node got "cancelled" from control). */
  signal: AbortSignal;
  /** Called at every step; awaited, so a slow observer slows the model, never reorders it. */
  onProgress?: (counters: ProgressCounters) => Promise<void>;
}

const PREFILL_WORDS_PER_STEP = 8;

const words = (text: string): string[] => text.split(/\s+/).filter(Boolean);

export function lastUserMessage(messages: ChatMessage[]): string {
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i];
    if (m?.role === "user") return m.content;
  }
  return "";
}

export function fakeAnswer(messages: ChatMessage[]): string {
  const reversed = words(lastUserMessage(messages)).reverse();
  return reversed.length ? `You said, backwards: ${reversed.join(" ")}` : "You said nothing.";
}

/** Resolves after `ms`; rejects with the signal's reason as soon as it aborts. */
function step(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
}

export async function runFakeModel(request: ApiV1Request, opts: FakeModelOptions): Promise<ApiV1Answer> {
  const started = performance.now();
  const promptTokens = request.messages.reduce((n, m) => n + words(m.content).length, 0);
  const answerWords = words(fakeAnswer(request.messages));
  let processed = 0;
  let generated = 0;
  const report = (phase: ProgressCounters["phase"]) =>
    opts.onProgress?.({
      phase,
      total_prompt_tokens: promptTokens,
      cached_prompt_tokens: 0,
      processed_prompt_tokens: processed,
      generated_tokens: generated,
      elapsed_ms: Math.round(performance.now() - started),
    });

  await report("preparing");
  while (processed < promptTokens) {
    await step(opts.stepMs, opts.signal);
    processed = Math.min(promptTokens, processed + PREFILL_WORDS_PER_STEP);
    await report("prefill");
  }
  while (generated < answerWords.length) {
    await step(opts.stepMs, opts.signal);
    generated++;
    await report("generating");
  }

  const maxTokens = request.options?.max_tokens;
  const requested = typeof maxTokens === "number" ? maxTokens : NODE_CAPABILITIES.default_output_token_reservation;
  const available = Math.max(NODE_CAPABILITIES.maximum_total_context_tokens - promptTokens, 0);
  return {
    message: { role: "assistant", content: answerWords.join(" ") },
    finish_reason: "stop",
    usage: { prompt_tokens: promptTokens, completion_tokens: generated, total_tokens: promptTokens + generated },
    output_budget: { requested_tokens: requested, available_tokens: available, effective_tokens: Math.min(requested, available) },
  };
}
