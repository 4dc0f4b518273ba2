import { methodNotAllowed } from "../errors.ts";
import type { RequestContext } from "./context.ts";

export type Handler = (req: Request, ctx: RequestContext) => Promise<Response> | Response;

export interface Match {
  route: string;
  handler: Handler;
}

/** Exact-path routes with per-method handlers: unknown paths fall through, wrong methods get 405. */
export class Router {
  private readonly routes = new Map<string, Map<string, Handler>>();

  on(method: string, path: string, handler: Handler): this {
    let byMethod = this.routes.get(path);
    if (!byMethod) this.routes.set(path, (byMethod = new Map()));
    byMethod.set(method, handler);
    if (method === "GET" && !byMethod.has("HEAD")) byMethod.set("HEAD", handler);
    return this;
  }

  paths(): string[] {
    return [...this.routes.keys()];
  }

  has(path: string): boolean {
    return this.routes.has(path);
  }

  /** undefined when no route has this path; throws 405 when the path exists for other methods. */
  match(method: string, path: string): Match | undefined {
    const byMethod = this.routes.get(path);
    if (!byMethod) return undefined;
    const handler = byMethod.get(method);
    if (!handler) throw methodNotAllowed([...byMethod.keys()]);
    return { route: path, handler };
  }
}
