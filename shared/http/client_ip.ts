/**
 * The client's address behind anonymous limits and admission caps: read only from the header
 * the deployment's trusted proxy writes (`CLIENT_IP_HEADER`), never one the client may choose,
 * and reduced to the unit one client owns (an IPv4 address, an IPv6 /64). Sources: README,
 * "Client IP".
 *
 * @module
 */
import type { Context } from "hono";

/** Headers a trusted proxy may write the client's address into. */
export const clientIpHeaders = ["cf-connecting-ip", "x-forwarded-for", "x-real-ip"] as const;

/** Where the client's address comes from (`CLIENT_IP_HEADER`). */
export type ClientIpHeader = typeof clientIpHeaders[number];

/** The bucket of callers whose address can't be told: they share one key. */
export const unknownIp = "unknown";

/**
 * The client IP key of a request, from the configured source only:
 * - `cf-connecting-ip` (default; hosted Supabase, reached through Cloudflare, which replaces
 *   whatever the client sent there with the connecting address);
 * - `x-forwarded-for`: its LAST entry, the one the trusted proxy (Kong/nginx on a self-hosted
 *   stack) appended; every earlier entry is the client's to write;
 * - `x-real-ip`: a proxy that sets it from the socket (nginx `proxy_set_header X-Real-IP`).
 * Other headers are ignored whatever they say. See {@link ipKey} for the key itself.
 */
export function clientIp(c: Context, source: ClientIpHeader): string {
  return clientIpOf(c.req.raw.headers, source);
}

/** {@link clientIp} on plain headers. */
export function clientIpOf(headers: Headers, source: ClientIpHeader): string {
  let value = headers.get(source);
  if (value === null) return unknownIp;
  if (source === "x-forwarded-for") value = value.slice(value.lastIndexOf(",") + 1);
  return ipKey(value) ?? unknownIp;
}

/**
 * The limit key of an address: an IPv4 address as is; an IPv6 address by its /64 prefix (one
 * host or home typically owns a whole /64, so its full addresses would buy fresh limits);
 * an IPv4-mapped IPv6 address as its IPv4 address. Null for anything that isn't an address
 * (a made-up value would only mint keys).
 */
export function ipKey(value: string): string | null {
  const text = value.trim();
  if (text.length > 64) return null;
  const v4 = parseIpv4(text);
  if (v4) return v4.join(".");
  const v6 = parseIpv6(text);
  if (!v6) return null;
  if (v6.slice(0, 5).every((g) => g === 0) && v6[5] === 0xffff) {
    return [v6[6] >> 8, v6[6] & 0xff, v6[7] >> 8, v6[7] & 0xff].join(".");
  }
  return `${v6.slice(0, 4).map((g) => g.toString(16)).join(":")}::/64`;
}

// Hand-written: the import map has no IP library, and node:net's isIP validates without
// expanding `::`, which the /64 prefix needs. Strict and linear, no regex backtracking.

function parseIpv4(text: string): number[] | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const bytes = parts.map((p) => (/^\d{1,3}$/.test(p) ? Number(p) : NaN));
  return bytes.every((b) => b >= 0 && b <= 255) ? bytes : null;
}

function parseIpv6(text: string): number[] | null {
  let s = text.toLowerCase();
  if (s.startsWith("[") && s.endsWith("]")) s = s.slice(1, -1);
  const zone = s.indexOf("%"); // fe80::1%eth0: the zone is local, not part of the address
  if (zone >= 0) s = s.slice(0, zone);
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const groups = (half: string, last: boolean): number[] | null => {
    if (half === "") return [];
    const out: number[] = [];
    const parts = half.split(":");
    for (const [i, p] of parts.entries()) {
      if (last && i === parts.length - 1 && p.includes(".")) {
        const v4 = parseIpv4(p);
        if (!v4) return null;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else if (/^[0-9a-f]{1,4}$/.test(p)) {
        out.push(parseInt(p, 16));
      } else {
        return null;
      }
    }
    return out;
  };
  const head = groups(halves[0], halves.length === 1);
  const tail = halves.length === 2 ? groups(halves[1], true) : [];
  if (!head || !tail) return null;
  if (halves.length === 1) return head.length === 8 ? head : null;
  const missing = 8 - head.length - tail.length;
  return missing >= 1 ? [...head, ...Array(missing).fill(0), ...tail] : null;
}
