import pkg from "../package.json" with { type: "json" };

declare const RELAY_BUILD_REVISION: string | undefined;

export const VERSION: string = pkg.version;
/** Set at compile time by scripts/build.ts (`--define`); "dev" when run from source. */
export const REVISION: string = typeof RELAY_BUILD_REVISION === "string" ? RELAY_BUILD_REVISION : "dev";
