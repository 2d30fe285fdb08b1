/**
 * The client IP behind anonymous limits can't be chosen by the client: only the header the
 * deployment's trusted proxy writes counts (`CLIENT_IP_HEADER`, here `x-forwarded-for`, as on
 * a self-hosted Kong stack), so a spoofed `CF-Connecting-IP` or leading `X-Forwarded-For`
 * entries don't buy fresh anonymous limits, and an IPv6 host's /64 is one key. Against real
 * Postgres and Redis, through `events`' anonymous limit (3 a minute here) and through the
 * local gateway.
 */
import { Hono } from "hono";
import { createApp as createEvents } from "../../functions/events/app.ts";
import { createGateway } from "../../scripts/dev/gateway.ts";
import { assert, assertEquals } from "../../scripts/testing/assert.ts";
import { functionTestEnv } from "../../scripts/testing/test_env.ts";
import { suite } from "../../scripts/testing/test_http.ts";
import { clientIpOf } from "./client_ip.ts";
import { loadConfig } from "../config.ts";

/** `events` with an anonymous limit of 3 a minute, and a probe answering its caller's key. */
async function setup() {
  const env = await functionTestEnv({
    env: { ANON_WRITE_RATE_LIMIT_PER_MIN: "3", CLIENT_IP_HEADER: "x-forwarded-for" },
  });
  const probe = new Hono().get("/", (c) => c.text(env.deps.clientIp(c)));
  const ipOf = async (headers: Record<string, string>) =>
    await (await probe.request("/", { headers })).text();
  return { env, events: createEvents(env.deps), ipOf, close: () => env.close() };
}
type Fixture = Awaited<ReturnType<typeof setup>>;
const it = suite("client IP", setup);

const from =
  (source: "cf-connecting-ip" | "x-forwarded-for" | "x-real-ip") =>
  (headers: Record<string, string>) => clientIpOf(new Headers(headers), source);

/** A random documentation address, as an attacker would rotate them. */
const spoof = () => `192.0.2.${Math.floor(Math.random() * 250) + 1}`;

function sendEvent({ events }: Fixture, headers: Record<string, string>) {
  return events.request("/events", {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ events: [{ name: "app.opened" }] }),
  });
}

async function statusesOf(
  fx: Fixture,
  headers: () => Record<string, string>,
): Promise<number[]> {
  const statuses = [];
  for (let i = 0; i < 5; i++) {
    const res = await sendEvent(fx, headers());
    statuses.push(res.status);
    await res.body?.cancel();
  }
  return statuses;
}

it("CLIENT_IP_HEADER: cf-connecting-ip by default; an unknown header is refused by name", () => {
  const base = { DATABASE_URL: "postgres://x@127.0.0.1/x" };
  assertEquals(loadConfig(base).clientIpHeader, "cf-connecting-ip");
  assertEquals(loadConfig({ ...base, CLIENT_IP_HEADER: "x-real-ip" }).clientIpHeader, "x-real-ip");
  let message = "";
  try {
    loadConfig({ ...base, CLIENT_IP_HEADER: "true-client-ip" });
  } catch (err) {
    message = String(err);
  }
  assert(message.includes("CLIENT_IP_HEADER"), message);
});

it("clientIp reads only the configured header; the others say nothing, whatever they hold", async ({ ipOf }) => {
  // This file runs with CLIENT_IP_HEADER=x-forwarded-for: a rotated cf-connecting-ip is noise.
  const keys = new Set<string>();
  for (let i = 0; i < 5; i++) {
    keys.add(await ipOf({ "cf-connecting-ip": spoof(), "x-forwarded-for": "198.51.100.20" }));
  }
  assertEquals([...keys], ["198.51.100.20"]);
  // Hosted (Cloudflare): cf-connecting-ip only; the client's x-forwarded-for is ignored.
  const cf = from("cf-connecting-ip");
  assertEquals(
    cf({ "cf-connecting-ip": "203.0.113.9", "x-forwarded-for": "1.2.3.4, 203.0.113.9" }),
    "203.0.113.9",
  );
  assertEquals(cf({ "x-forwarded-for": "203.0.113.9" }), "unknown");
  // nginx's X-Real-IP, set from the socket.
  assertEquals(
    from("x-real-ip")({ "x-real-ip": "9.9.9.9", "cf-connecting-ip": "1.1.1.1" }),
    "9.9.9.9",
  );
  // No header at all, or garbage: one shared bucket, not a key per made-up value.
  assertEquals(await ipOf({}), "unknown");
  assertEquals(await ipOf({ "x-real-ip": "9.9.9.9" }), "unknown");
  assertEquals(await ipOf({ "x-forwarded-for": `1.2.3.4, ${"a".repeat(5000)}` }), "unknown");
  assertEquals(await ipOf({ "x-forwarded-for": "1.2.3.4, not-an-ip" }), "unknown");
  assertEquals(await ipOf({ "x-forwarded-for": "1.2.3.4, 1.2.3.256" }), "unknown");
  assertEquals(await ipOf({ "x-forwarded-for": "1.2.3.4, 1:2:3:4:5:6:7:8:9" }), "unknown");
});

it("x-forwarded-for: spoofed leading entries are ignored, the trusted proxy's last hop counts", async ({ ipOf }) => {
  const keys = new Set<string>();
  for (let i = 0; i < 5; i++) {
    keys.add(await ipOf({ "x-forwarded-for": `${spoof()}, ${spoof()},198.51.100.20` }));
  }
  assertEquals([...keys], ["198.51.100.20"]);
});

it("IPv6: one key per /64 (a host owns one); IPv4-mapped addresses are their IPv4", async ({ ipOf }) => {
  const a = await ipOf({ "x-forwarded-for": "2001:DB8:aa:bb::1" });
  const b = await ipOf({ "x-forwarded-for": "2001:db8:aa:bb:dead:beef:1234:5678" });
  const other = await ipOf({ "x-forwarded-for": "2001:db8:aa:bc::1" });
  assertEquals(a, "2001:db8:aa:bb::/64");
  assertEquals(b, a);
  assert(other !== a, other);
  assertEquals(await ipOf({ "x-forwarded-for": "::ffff:203.0.113.7" }), "203.0.113.7");
  assertEquals(await ipOf({ "x-forwarded-for": "::ffff:cb00:7107" }), "203.0.113.7");
  assertEquals(await ipOf({ "x-forwarded-for": "[fe80::1%eth0]" }), "fe80:0:0:0::/64");
  assertEquals(await ipOf({ "x-forwarded-for": "::1" }), "0:0:0:0::/64");
});

it("events' anonymous limit: rotating addresses inside one IPv6 /64 buys nothing", async (fx) => {
  const host = () => [...crypto.getRandomValues(new Uint16Array(4))].map((g) => g.toString(16));
  const statuses = await statusesOf(fx, () => ({
    "x-forwarded-for": `2001:db8:77:1:${host().join(":")}`,
  }));
  assertEquals(statuses, [202, 202, 202, 429, 429]);
});

it("events' anonymous limit: a rotated CF-Connecting-IP doesn't reset it when X-Forwarded-For is trusted", async (fx) => {
  const statuses = await statusesOf(fx, () => ({
    "cf-connecting-ip": spoof(),
    "x-forwarded-for": `${spoof()}, 198.51.100.99`,
  }));
  assertEquals(statuses, [202, 202, 202, 429, 429]);
});

it("through the local gateway: spoofed X-Forwarded-For and CF-Connecting-IP are the socket's peer", async ({ env }) => {
  const gateway = await createGateway({ deps: env.deps, jwks: env.keys.jwks });
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    gateway.fetch,
  );
  const statuses = [];
  for (let i = 0; i < 5; i++) {
    const res = await fetch(`http://127.0.0.1:${server.addr.port}/functions/v1/events`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-forwarded-for": spoof(),
        "cf-connecting-ip": spoof(),
        "x-real-ip": spoof(),
      },
      body: JSON.stringify({ events: [{ name: "app.opened" }] }),
    });
    statuses.push(res.status);
    await res.body?.cancel();
  }
  assertEquals(statuses, [202, 202, 202, 429, 429]);
});
