import { RelayError } from "../errors.ts";
import { BUSY_RETRY_AFTER_SECONDS, CLOSE } from "../http/body-budget.ts";

/**
 * Proxied uploads in progress per client address (RELAY_PROXY_MAX_UPLOADS_PER_IP). A slot is held
 * from the request's arrival until its body has been received (or the attempt failed), not for the
 * response: a long SSE answer does not count, a trickling upload does. With the body deadline this
 * bounds what one address can hold of the upstream's connections.
 */
export interface UploadSlots {
  /** Takes a slot for `ip` or throws 429 too_many_uploads; returns the idempotent release. */
  acquire(ip: string | undefined): () => void;
  readonly active: number;
}

export const tooManyUploads = (max: number) => {
  const message = `More than ${max} uploads at once from this address; retry when one has finished`;
  return new RelayError(429, "too_many_uploads", message, { error: { message, code: 429, type: "too_many_uploads", limit: max } }, {
    ...CLOSE,
    "Retry-After": String(BUSY_RETRY_AFTER_SECONDS),
  });
};

/** `max` 0: no per-address cap (slots are still counted). */
export function createUploadSlots(max: number): UploadSlots {
  const perIp = new Map<string, number>();
  let active = 0;
  const noop = () => {};

  function acquire(ip: string | undefined): () => void {
    if (ip === undefined) return noop;
    const held = perIp.get(ip) ?? 0;
    if (max > 0 && held >= max) throw tooManyUploads(max);
    perIp.set(ip, held + 1);
    active++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      active--;
      const left = (perIp.get(ip) ?? 1) - 1;
      if (left > 0) perIp.set(ip, left);
      else perIp.delete(ip);
    };
  }

  return {
    acquire,
    get active() {
      return active;
    },
  };
}
