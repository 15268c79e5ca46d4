import { hostname, networkInterfaces } from "node:os";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { HttpError } from "./errors.ts";

/**
 * What a web page or a DNS-rebinding site could make the agent do, refused before any route
 * runs:
 * - a request whose `Host` is not one of the box's names (a rebinding site's name) is 421;
 * - a request that changes something (any method but GET/HEAD/OPTIONS) sent by a page of
 *   another site (`Origin` or `Sec-Fetch-Site` say so) is 403, since an HTML form can POST
 *   multipart to the box without any CORS preflight.
 * Programs that send neither header (curl, the typed client, Home Assistant) are not affected.
 */
export interface SiteGuardOptions {
  /** Host names (or addresses) requests may be addressed to besides loopback's; "*" turns the check off. */
  allowedHosts: string[];
  /** Origins of other sites' pages that may change things, e.g. "https://labeler.example.com". */
  allowedOrigins: string[];
}

const LOOPBACK_NAMES = ["localhost", "127.0.0.1", "::1"];
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);
const WILDCARD_HOSTS = new Set(["0.0.0.0", "::", "[::]"]);

/** The names a box listening on `listenHost` answers to, without any configuration. */
export function defaultAllowedHosts(listenHost: string): string[] {
  const names = [...LOOPBACK_NAMES];
  if (!WILDCARD_HOSTS.has(listenHost)) return [...names, bare(listenHost)];
  // Listening everywhere: the machine's own name and every address of its interfaces.
  const host = hostname().toLowerCase();
  names.push(host, `${host}.local`);
  for (const addresses of Object.values(networkInterfaces())) for (const a of addresses ?? []) names.push(a.address.toLowerCase());
  return names;
}

/** A host name as compared: lower case, no brackets around IPv6, no trailing dot. */
function bare(host: string): string {
  return host.toLowerCase().replace(/^\[(.*)\]$/, "$1").replace(/\.$/, "");
}

/** The name part of a Host header value ("box.local:8080", "[::1]:8080"). */
function hostName(header: string): string {
  const ipv6 = /^\[([^\]]*)\](?::\d+)?$/.exec(header);
  return bare(ipv6 ? ipv6[1]! : header.replace(/:\d+$/, ""));
}

function sameOrigin(request: FastifyRequest, origin: string): boolean {
  try {
    return new URL(origin).host === request.headers.host;
  } catch {
    return false;
  }
}

export function registerSiteGuard(app: FastifyInstance, options: SiteGuardOptions): void {
  const anyHost = options.allowedHosts.includes("*");
  const hosts = new Set([...LOOPBACK_NAMES, ...options.allowedHosts].map(bare));
  const origins = new Set(options.allowedOrigins.map((o) => o.replace(/\/$/, "").toLowerCase()));
  app.addHook("onRequest", async (request) => {
    const host = request.headers.host;
    if (!anyHost && (host === undefined || !(hosts.has(hostName(host)) || hostName(host).endsWith(".localhost")))) {
      throw new HttpError(
        "HOST_NOT_ALLOWED",
        `this agent does not answer to the name ${JSON.stringify((host ?? "").slice(0, 100))}; add it to http.allowed_hosts to reach the agent by that name`,
      );
    }
    if (SAFE_METHODS.has(request.method)) return;
    const origin = request.headers.origin;
    const site = request.headers["sec-fetch-site"];
    const allowedOrigin = origin !== undefined && (sameOrigin(request, origin) || origins.has(origin.toLowerCase()));
    if ((origin !== undefined && !allowedOrigin) || ((site === "cross-site" || site === "same-site") && !allowedOrigin)) {
      throw new HttpError(
        "CROSS_SITE_REQUEST",
        `a page of another site (${JSON.stringify((origin ?? site ?? "").slice(0, 100))}) may not change this agent; add its origin to http.allowed_origins if it should`,
      );
    }
  });
}
