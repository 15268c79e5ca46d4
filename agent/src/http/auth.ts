import { createHash, timingSafeEqual } from "node:crypto";
import type { FastifyInstance } from "fastify";
import { HttpError } from "./errors.ts";

/**
 * Routes anyone may call even when a token is set: liveness probes carry no credentials, and
 * the page's static shell holds no data (a browser cannot send a bearer token when it opens a
 * URL; the page then sends the token with every API call).
 */
const OPEN_ROUTES = new Set(["/healthz", "/", "/app.js"]);

const digest = (text: string): Buffer => createHash("sha256").update(text).digest();

/**
 * With a token, every route but the open ones wants `Authorization: Bearer <token>`. Both sides are
 * hashed first so the comparison takes the same time whatever the length or content of the
 * guess.
 */
export function registerBearerAuth(app: FastifyInstance, token: string): void {
  const expected = digest(token);
  // preParsing: after every onRequest hook (the rate limit's are route-level, so they run after
  // the app's own), so a client guessing tokens is counted, and before any body is read.
  app.addHook("preParsing", async (request, reply) => {
    if (OPEN_ROUTES.has(request.routeOptions.url ?? "")) return;
    const match = /^Bearer +(\S+) *$/i.exec(request.headers.authorization ?? "");
    if (match && timingSafeEqual(digest(match[1]!), expected)) return;
    reply.header("WWW-Authenticate", 'Bearer realm="sam-edge"');
    throw new HttpError(
      "UNAUTHORIZED",
      match ? "the bearer token is not the one this agent is configured with" : "send the agent's token as Authorization: Bearer <token>",
    );
  });
}
