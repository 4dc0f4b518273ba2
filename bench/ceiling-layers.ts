/** The layers bench/ceiling-server.ts can add (`CEILING_LAYERS`), in the order a request meets them; bench/layers.ts prices each. */
export const CEILING_LAYERS = ["id", "ip", "deadline", "headers", "metrics", "log"] as const;
export type CeilingLayer = (typeof CEILING_LAYERS)[number];
