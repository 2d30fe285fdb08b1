/**
 * The client IP behind anonymous limits can't be chosen by the client: a spoofed
 * `X-Forwarded-For` (or `CF-Connecting-IP` sent to our local gateway) doesn't buy fresh
 * anonymous limits. Against real Postgres and Redis, through `events`' anonymous limit
 * (3 a minute here) and through the local gateway.
 */
import { Hono } from "hono";
import { assertEquals } from "../scripts/assert.ts";
import { functionTestEnv } from "../scripts/test_env.ts";
import { it } from "../scripts/test_http.ts";

const env = await functionTestEnv({ env: { ANON_WRITE_RATE_LIMIT_PER_MIN: "3" } });
const { clientIp } = await import("./http.ts");
const { app: events } = await import("../functions/events/app.ts");
const { createGateway } = await import("../scripts/gateway.ts");
const { sql } = await import("./db.ts");

const probe = new Hono().get("/", (c) => c.text(clientIp(c)));
const ipOf = async (headers: Record<string, string>) =>
  await (await probe.request("/", { headers })).text();

/** A random documentation address, as an attacker would rotate them. */
const spoof = () => `192.0.2.${Math.floor(Math.random() * 250) + 1}`;

function sendEvent(headers: Record<string, string>) {
  return events.request("/events", {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ events: [{ name: "app.opened" }] }),
  });
}

it("clientIp: cf-connecting-ip, else the last x-forwarded-for hop; never the client's first", async () => {
  // As Supabase's edge delivers it: the client's own XFF first, the real peer appended.
  assertEquals(
    await ipOf({ "cf-connecting-ip": "203.0.113.9", "x-forwarded-for": "1.2.3.4, 203.0.113.9" }),
    "203.0.113.9",
  );
  // Behind a proxy that only appends (Kong/nginx `$proxy_add_x_forwarded_for`).
  assertEquals(
    await ipOf({ "x-forwarded-for": "1.2.3.4,5.6.7.8, 198.51.100.20" }),
    "198.51.100.20",
  );
  assertEquals(await ipOf({ "x-forwarded-for": "2001:DB8::1" }), "2001:db8::1");
  // No proxy header at all, or garbage: one shared bucket, not a key per made-up value.
  assertEquals(await ipOf({}), "unknown");
  assertEquals(await ipOf({ "x-real-ip": "9.9.9.9" }), "unknown");
  assertEquals(await ipOf({ "x-forwarded-for": `1.2.3.4, ${"a".repeat(5000)}` }), "unknown");
  assertEquals(await ipOf({ "cf-connecting-ip": "not-an-ip", "x-forwarded-for": "" }), "unknown");
});

it("a spoofed X-Forwarded-For doesn't reset events' anonymous limit (as Supabase's edge forwards it)", async () => {
  const statuses = [];
  for (let i = 0; i < 5; i++) {
    const res = await sendEvent({
      "cf-connecting-ip": "203.0.113.9",
      "x-forwarded-for": `${spoof()}, 203.0.113.9`,
    });
    statuses.push(res.status);
    await res.body?.cancel();
  }
  assertEquals(statuses, [202, 202, 202, 429, 429]);
});

it("behind a proxy that appends the peer, the rotated first entry buys nothing either", async () => {
  const statuses = [];
  for (let i = 0; i < 5; i++) {
    const res = await sendEvent({ "x-forwarded-for": `${spoof()}, ${spoof()}, 198.51.100.20` });
    statuses.push(res.status);
    await res.body?.cancel();
  }
  assertEquals(statuses, [202, 202, 202, 429, 429]);
});

it("through the local gateway: spoofed X-Forwarded-For and CF-Connecting-IP are the socket's peer", async () => {
  const gateway = await createGateway({ jwks: env.keys.jwks });
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

it("teardown", async () => {
  await sql.end();
  await env.close();
});
