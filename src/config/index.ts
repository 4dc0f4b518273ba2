export * from "./config.ts";
export * from "./defaults.ts";
export { EnvReader, type Env } from "./env-reader.ts";
