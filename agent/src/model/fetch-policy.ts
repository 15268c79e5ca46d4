import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { BlockList, isIP, type LookupFunction } from "node:net";
import { Agent, fetch, type Response } from "undici";

/**
 * Which URLs a model update requested over the API (or MQTT) may fetch. The request comes from
 * the network, so the fetch must not become a way into it: `https:` only (plain `http:` to the
 * hosts listed), and never an address on this box, its LAN or a cloud's metadata service,
 * checked on the address actually connected to (after DNS, so a name that resolves inward is
 * refused too) and again for every redirect. The listed hosts are the owner's own model
 * servers, trusted to be wherever they are.
 */
export interface FetchPolicy {
  /** Hosts (names or addresses) that may be fetched over http: and may resolve to private addresses. */
  allowedHosts: string[];
}

/** Why a URL may not be fetched: the detail is for the agent's log, never for the requester. */
export class FetchRefused extends Error {
  override readonly name = "FetchRefused";
}

const PRIVATE = new BlockList();
for (const [net, prefix] of [
  ["0.0.0.0", 8],
  ["10.0.0.0", 8],
  ["100.64.0.0", 10],
  ["127.0.0.0", 8],
  ["169.254.0.0", 16],
  ["172.16.0.0", 12],
  ["192.0.0.0", 24],
  ["192.168.0.0", 16],
  ["198.18.0.0", 15],
  ["224.0.0.0", 3],
] as const) {
  PRIVATE.addSubnet(net, prefix, "ipv4");
}
for (const [net, prefix] of [
  ["::", 127],
  ["fc00::", 7],
  ["fe80::", 10],
  ["ff00::", 8],
  ["64:ff9b::", 96],
] as const) {
  PRIVATE.addSubnet(net, prefix, "ipv6");
}

/** Whether an address is on this box, a private network, link-local (cloud metadata) or otherwise not the Internet. */
export function isPrivateAddress(address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return PRIVATE.check(mapped[1]!, "ipv4");
  const family = isIP(address);
  return family === 4 ? PRIVATE.check(address, "ipv4") : family === 6 ? PRIVATE.check(address, "ipv6") : true;
}

const bareHost = (url: URL): string => url.hostname.toLowerCase().replace(/^\[(.*)\]$/, "$1");

/** Throws FetchRefused unless the URL's scheme and (literal) address are allowed. */
function checkUrl(url: URL, allowed: Set<string>): void {
  const host = bareHost(url);
  const listed = allowed.has(host);
  if (url.protocol !== "https:" && !(url.protocol === "http:" && listed)) {
    throw new FetchRefused(`${url.protocol} to ${host} is not allowed: model updates are fetched over https, or http from a host in model.update.allowed_hosts`);
  }
  if (!listed && isIP(host) && isPrivateAddress(host)) throw new FetchRefused(`${host} is a private, loopback or link-local address, not in model.update.allowed_hosts`);
}

/** A DNS lookup that refuses names resolving to private addresses, used for every connection the fetch makes. */
function guardedLookup(allowed: Set<string>): LookupFunction {
  return (hostname, options, callback) => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses: LookupAddress[]) => {
      if (err) return callback(err, "", 0);
      const blocked = !allowed.has(hostname.toLowerCase()) && addresses.find((a) => isPrivateAddress(a.address));
      if (blocked) return callback(new FetchRefused(`${hostname} resolves to ${blocked.address}, a private, loopback or link-local address, not in model.update.allowed_hosts`), "", 0);
      if (options.all) (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, addresses);
      else callback(null, addresses[0]!.address, addresses[0]!.family);
    });
  };
}

const MAX_REDIRECTS = 5;

/** GETs under the policy, redirects followed by hand so that each hop is checked like the first. Close it when done. */
export class PolicedFetch {
  private readonly allowed: Set<string>;
  private readonly dispatcher: Agent;

  constructor(policy: FetchPolicy) {
    this.allowed = new Set(policy.allowedHosts.map((h) => h.toLowerCase().replace(/^\[(.*)\]$/, "$1")));
    this.dispatcher = new Agent({ connect: { lookup: guardedLookup(this.allowed) } });
  }

  get(url: URL, signal: AbortSignal): Promise<Response> {
    return policedGet(url, signal, this.allowed, this.dispatcher);
  }

  close(): Promise<void> {
    return this.dispatcher.close();
  }
}

async function policedGet(url: URL, signal: AbortSignal, allowed: Set<string>, dispatcher: Agent): Promise<Response> {
  let current = url;
  try {
    for (let hop = 0; ; hop++) {
      checkUrl(current, allowed);
      const res = await fetch(current, { signal, redirect: "manual", dispatcher });
      const location = res.headers.get("location");
      if (res.status < 300 || res.status >= 400 || !location) return res;
      await res.body?.cancel();
      if (hop >= MAX_REDIRECTS) throw new FetchRefused(`more than ${MAX_REDIRECTS} redirects from ${url.href}`);
      current = new URL(location, current);
    }
  } catch (err) {
    // undici wraps the lookup's refusal as the cause of a TypeError("fetch failed").
    const cause = (err as { cause?: unknown }).cause;
    throw cause instanceof FetchRefused ? cause : err;
  }
}
