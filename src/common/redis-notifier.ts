import type Redis from "ioredis";
import { MemoryNotifier, type Notifier, type NotifyOptions, type Subscription } from "./notifier.ts";
import { sha256Hex } from "./tokens.ts";

/**
 * Wakes held requests across replicas: a request posted on replica B wakes the poll held on
 * replica A. Every replica subscribes once, at start, to one channel; a wake-up publishes the
 * SHA-256 of its topic there (topics contain public keys, kilobytes long; the hash also keeps keys
 * out of the datastore's monitoring). Both protocols' stores publish theirs inside the transition's
 * own script, only while a poll may wait: notify() then wakes only this process's waiters, and
 * publishes itself only for a store that does not. Pub/Sub is only a wake-up (the store is the truth):
 * a lost message costs latency until the hold's final re-check, never correctness, and after a
 * reconnect every local waiter is woken to re-check at once, since messages may have been missed.
 *
 * The same subscription carries one more signal between replicas: "a registration token check
 * failed" (FailureSignal), so that while nobody guesses, no replica reads failure counters.
 */
export class RedisNotifier implements Notifier {
  private readonly local = new MemoryNotifier();
  private readonly channel: string;
  private readonly failureChannel: string;
  private readonly failureListeners: FailureListener[] = [];
  /** Subscriptions so far; the current one is caught up on failures once `caughtUp` equals it. */
  private subscriptions = 0;
  private caughtUp = -1;
  /** What rate limits use to know of other replicas' failed token checks. */
  readonly authFailures: FailureSignal;

  constructor(
    private readonly publisher: Redis,
    private readonly subscriber: Redis,
    keyPrefix: string,
  ) {
    this.channel = wakeChannel(keyPrefix);
    this.failureChannel = `${keyPrefix}auth-failure`;
    subscriber.on("message", (channel: string, digest: string) => {
      if (channel === this.channel) this.local.notify(digest);
      else if (channel === this.failureChannel) for (const l of this.failureListeners) l.onFailure();
    });
    // Subscribe whenever the connection becomes ready: at start (commands are not queued while
    // connecting, see src/state/redis.ts) and after every reconnect. Whatever was published while
    // unsubscribed is gone, so every local waiter re-checks the store at once, and failure
    // listeners catch up from the datastore before the signal counts as heard again.
    const onReady = () => {
      subscriber.subscribe(this.channel, this.failureChannel).then(
        () => {
          this.local.notifyAll();
          void this.catchUp(++this.subscriptions);
        },
        () => {},
      );
    };
    subscriber.on("ready", onReady);
    subscriber.on("close", () => this.subscriptions++);
    if (subscriber.status === "ready") onReady();
    const self = this;
    this.authFailures = {
      get listening() {
        return self.caughtUp === self.subscriptions && subscriber.status === "ready";
      },
      announce: async () => {
        // Sent with the failure's counter update; the caller awaits both before answering 401.
        if (publisher.status === "ready") await publisher.publish(this.failureChannel, "1").catch(() => undefined);
      },
      listen: (listener) => {
        this.failureListeners.push(listener);
      },
    };
  }

  /** Runs every listener's catch-up for subscription `n`, again a second later while one fails. */
  private async catchUp(n: number): Promise<void> {
    try {
      await Promise.all(this.failureListeners.map((l) => l.catchUp()));
      if (n === this.subscriptions) this.caughtUp = n;
    } catch {
      if (n === this.subscriptions) setTimeout(() => n === this.subscriptions && void this.catchUp(n), CATCH_UP_RETRY_MS).unref();
    }
  }

  subscribe(topic: string): Subscription {
    return this.local.subscribe(digest(topic));
  }

  notify(topic: string, opts?: NotifyOptions): void {
    // Published by the transition's own script: only this process's waiters are left, and with
    // none at all (a cycle whose steps find their work at once) the topic needs no digest.
    if (opts?.published && this.local.size === 0) return;
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

/** A failed catch-up (the datastore answered an error) is tried again after this long. */
const CATCH_UP_RETRY_MS = 1_000;

/**
 * "A registration token check failed somewhere", between replicas (src/common/rate-limits.ts).
 * Only a hint that lets a replica skip reading counters while nobody is guessing: the counters in
 * the datastore stay the truth.
 */
export interface FailureSignal {
  /** Subscribed and caught up: every failure announced since reaches this replica. */
  readonly listening: boolean;
  /** Tells every replica, this one included, that a check failed now (resolves once published). */
  announce(): Promise<void>;
  listen(listener: FailureListener): void;
}

export interface FailureListener {
  /** Any replica announced a failure. */
  onFailure(): void;
  /**
   * After every (re)subscription: learn from the datastore what was announced before it (those
   * messages are missed). `listening` turns true once it resolved.
   */
  catchUp(): Promise<void>;
}

const digest = sha256Hex;

/** The one channel of wake-ups, and what a wake-up carries: a script may publish them itself. */
export const wakeChannel = (keyPrefix: string) => `${keyPrefix}wake`;
export const wakeDigest = digest;
