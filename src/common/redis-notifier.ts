import type Redis from "ioredis";
import { MemoryNotifier, type Notifier, type NotifyOptions, type Subscription } from "./notifier.ts";
import { sha256Hex } from "./tokens.ts";

/**
 * Wakes held requests across replicas: a request posted on replica B wakes the poll held on
 * replica A. Every replica subscribes once, at start, to one channel; a notification publishes
 * the SHA-256 of its topic there (topics contain public keys, kilobytes long; the hash also keeps
 * keys out of the datastore's monitoring). Pub/Sub is only a wake-up (the store is the truth):
 * a lost message costs latency until the hold's final re-check, never correctness, and after a
 * reconnect every local waiter is woken to re-check at once, since messages may have been missed.
 */
export class RedisNotifier implements Notifier {
  private readonly local = new MemoryNotifier();
  private readonly channel: string;

  constructor(
    private readonly publisher: Redis,
    private readonly subscriber: Redis,
    keyPrefix: string,
  ) {
    this.channel = wakeChannel(keyPrefix);
    subscriber.on("message", (channel: string, digest: string) => {
      if (channel === this.channel) this.local.notify(digest);
    });
    // Subscribe whenever the connection becomes ready: at start (commands are not queued while
    // connecting, see src/state/redis.ts) and after every reconnect. Whatever was published while
    // unsubscribed is gone, so every local waiter re-checks the store at once.
    const onReady = () => {
      subscriber.subscribe(this.channel).then(
        () => this.local.notifyAll(),
        () => {},
      );
    };
    subscriber.on("ready", onReady);
    if (subscriber.status === "ready") onReady();
  }

  subscribe(topic: string): Subscription {
    return this.local.subscribe(digest(topic));
  }

  notify(topic: string, opts?: NotifyOptions): void {
    const d = digest(topic);
    this.local.notify(d);
    if (opts?.published) return;
    // Fire and forget: a failed publish costs other replicas latency, not correctness.
    if (this.publisher.status === "ready") this.publisher.publish(this.channel, d).catch(() => {});
  }

  close(): void {
    this.subscriber.disconnect();
  }
}

const digest = sha256Hex;

/** The one channel of wake-ups, and what a wake-up carries: a script may publish them itself. */
export const wakeChannel = (keyPrefix: string) => `${keyPrefix}wake`;
export const wakeDigest = digest;
