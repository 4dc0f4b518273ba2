/**
 * The demo's stand-in for an LLM: deterministic, instant, and obviously "processed" so a reader
 * can see the node really decrypted the prompt (it answers with the prompt's words reversed).
 */
import type { ChatMessage } from "./crypto.ts";

export function lastUserMessage(history: ChatMessage[]): string {
  for (let i = history.length - 1; i >= 0; i--) {
    const m = history[i];
    if (m?.role === "user") return m.content;
  }
  return "";
}

/** The whole answer, as a list of pieces (words plus their trailing space) to stream one by one. */
export function fakeAnswerPieces(history: ChatMessage[]): string[] {
  const words = lastUserMessage(history).split(/\s+/).filter(Boolean).reverse();
  const text = words.length ? `You said, backwards: ${words.join(" ")}` : "You said nothing.";
  return text.split(/(?<= )/);
}

export const fakeAnswer = (history: ChatMessage[]): string => fakeAnswerPieces(history).join("");

/** Checks the arguments of a decrypted chat history instead of trusting the sender. */
export function isChatHistory(value: unknown): value is ChatMessage[] {
  return (
    Array.isArray(value) &&
    value.every(
      (m) =>
        m !== null &&
        typeof m === "object" &&
        typeof (m as ChatMessage).content === "string" &&
        ["system", "user", "assistant"].includes((m as ChatMessage).role),
    )
  );
}
