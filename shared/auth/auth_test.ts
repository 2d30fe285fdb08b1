/**
 * shared/auth: malformed Authorization headers, tokens missing required claims, and the
 * project's own keys (what a signed-out supabase-js client sends) as anonymous.
 */
import { SignJWT } from "jose";
import { Hono } from "hono";
import { createDevKeys } from "../../scripts/dev/dev_auth.ts";
import { assertEquals, assertMatch } from "../../scripts/testing/assert.ts";
import { unitEnv } from "../../scripts/testing/unit_env.ts";
import { Auth } from "./auth.ts";
import { loadConfig } from "../config.ts";
import { problemResponse, toProblem } from "../http/problem.ts";

const keys = await createDevKeys();
const hsSecret = "test-hs256-secret-that-is-long-enough-0123456789";
/** The legacy anon key of another signing secret than ours: known only by its exact value. */
const legacyAnonKey = await new SignJWT({ iss: "supabase", ref: "unit", role: "anon" })
  .setProtectedHeader({ alg: "HS256", typ: "JWT" })
  .setIssuedAt()
  .setExpirationTime("10y")
  .sign(new TextEncoder().encode("x".repeat(40)));
const auth = new Auth(loadConfig({
  ...unitEnv,
  SUPABASE_JWKS: JSON.stringify(keys.jwks),
  JWT_SECRET: hsSecret,
  SUPABASE_PUBLISHABLE_KEYS: JSON.stringify({ default: "sb_publishable_unit_1" }),
  SUPABASE_ANON_KEY: legacyAnonKey,
}));

const userId = "00000000-0000-4000-8000-0000000000a1";
const app = new Hono<{ Variables: { user: { id: string } | null } }>();
app.onError((err, c) => problemResponse(c, toProblem(err)));
app.get("/open", auth.optionalUser(), (c) => c.json({ user: c.var.user?.id ?? null }));
app.get("/user", auth.requireUser(), (c) => c.json({ user: c.var.user!.id }));

async function call(path: string, authorization?: string) {
  const res = await app.request(path, {
    headers: authorization === undefined ? {} : { authorization },
  });
  return { status: res.status, type: res.headers.get("content-type"), body: await res.json() };
}

const hs256 = (claims: Record<string, unknown>) =>
  new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).sign(new TextEncoder().encode(hsSecret));

Deno.test("a malformed Authorization header is a 401, never anonymous", async () => {
  const token = await keys.mint(userId);
  assertEquals((await call("/open", `Bearer ${token}`)).body.user, userId);
  for (
    const header of [
      `Bearer ${token} junk`,
      `Bearer  ${token}  x`,
      `Basic ${btoa("a:b")}`,
      "Bearer",
      "Bearer ",
      token,
      "",
      `Bearer ${token},${token}`,
    ]
  ) {
    for (const path of ["/open", "/user"]) {
      const res = await call(path, header);
      assertEquals(res.status, 401, `${path} ${header.slice(0, 30)}`);
      assertEquals(res.type, "application/problem+json");
      if (path === "/open" && header !== "") {
        assertMatch(res.body.detail, /Authorization|malformed/);
      }
    }
  }
  assertEquals((await call("/open")).body.user, null);
  assertEquals((await call("/open", `bearer ${token}`)).body.user, userId); // scheme: any case
});

Deno.test("user tokens must carry exp, sub, aud and role", async () => {
  for (const claim of ["exp", "sub", "aud", "role"]) {
    for (const token of [await keys.mint(userId, { omit: [claim] })]) {
      for (const path of ["/open", "/user"]) {
        const res = await call(path, `Bearer ${token}`);
        assertEquals(res.status, 401, `${path} without ${claim}: ${JSON.stringify(res.body)}`);
        assertMatch(res.body.detail, new RegExp(claim));
      }
    }
  }
  const noExp = await hs256({ sub: userId, aud: "authenticated", role: "authenticated" });
  assertEquals((await call("/user", `Bearer ${noExp}`)).status, 401);
  const wrongRole = await keys.mint(userId, { claims: { role: "service_role" } });
  assertEquals((await call("/open", `Bearer ${wrongRole}`)).status, 401);
});

Deno.test("the project's keys as bearer: anonymous where anonymous is allowed, else a clear 401", async () => {
  const anonJwt = await keys.mintAnon(); // signed by the project's key, role anon
  const anonHs = await hs256({ iss: "supabase", role: "anon", exp: 4102444800 });
  for (const key of ["sb_publishable_unit_1", anonJwt, anonHs, legacyAnonKey]) {
    const open = await call("/open", `Bearer ${key}`);
    assertEquals(open.status, 200, JSON.stringify(open.body));
    assertEquals(open.body.user, null);
    const user = await call("/user", `Bearer ${key}`);
    assertEquals(user.status, 401);
    assertMatch(user.body.detail, /signed-in user/);
  }
  // Keys that are not this project's: a 401 naming the problem.
  const other = await call("/open", "Bearer sb_publishable_someone_else");
  assertEquals(other.status, 401);
  assertMatch(other.body.detail, /publishable key of this project/);
  const secret = await call("/open", "Bearer sb_secret_abc");
  assertEquals(secret.status, 401);
  assertMatch(secret.body.detail, /apikey header/);
  const anonWithoutExp = await hs256({ iss: "supabase", role: "anon" });
  assertEquals((await call("/open", `Bearer ${anonWithoutExp}`)).status, 401);
});

Deno.test("a token's sub in capitals names the same (canonical, lowercase) user", async () => {
  const token = await keys.mint(userId.toUpperCase());
  assertEquals((await call("/user", `Bearer ${token}`)).body.user, userId);
});

Deno.test("one signature check per token per isolate: verify_jwt and the function share it", async () => {
  let now = Date.now();
  const clocked = new Auth(loadConfig({ ...unitEnv, SUPABASE_JWKS: JSON.stringify(keys.jwks) }), {
    now: () => now,
  });
  const token = await keys.mint(userId, { ttlS: 60 });
  // The gateway's verify_jwt, then the function's identify (admission) and requireUser.
  await clocked.verifyJwtOnce(token);
  assertEquals(clocked.signatureChecks, 1);
  assertEquals((await clocked.identify(token))?.id, userId);
  assertEquals((await clocked.verifyAccessToken(token)).id, userId);
  for (let i = 0; i < 5; i++) {
    await clocked.verifyJwtOnce(token);
    await clocked.identify(token);
  }
  assertEquals(clocked.signatureChecks, 1);
  // Concurrent first requests with one token wait on one check.
  const other = await keys.mint("00000000-0000-4000-8000-0000000000a2", { ttlS: 60 });
  await Promise.all([
    clocked.verifyJwtOnce(other),
    clocked.identify(other),
    clocked.identify(other),
  ]);
  assertEquals(clocked.signatureChecks, 2);
  // The other order: identify first, then verify_jwt finds it verified.
  const third = await keys.mint("00000000-0000-4000-8000-0000000000a3", { ttlS: 60 });
  await clocked.identify(third);
  await clocked.verifyJwtOnce(third);
  assertEquals(clocked.signatureChecks, 3);

  // Past its exp the cached entry is not trusted: verified again, and refused as expired.
  now += 61_000;
  for (const check of [() => clocked.verifyJwtOnce(token), () => clocked.identify(token)]) {
    const before = clocked.signatureChecks;
    const refused = await check().then(() => null, (err) => toProblem(err));
    assertEquals(refused?.status, 401);
    assertMatch(refused!.detail!, /expired/);
    assertEquals(clocked.signatureChecks, before + 1);
  }
});

Deno.test("a verified token that names no user: verify_jwt passes it, identify refuses it, one check", async () => {
  const clocked = new Auth(loadConfig({ ...unitEnv, SUPABASE_JWKS: JSON.stringify(keys.jwks) }));
  const service = await keys.mint(userId, { claims: { role: "service_role" } });
  await clocked.verifyJwtOnce(service);
  for (let i = 0; i < 2; i++) {
    const refused = await clocked.identify(service).then(() => null, (err) => toProblem(err));
    assertEquals(refused?.status, 401);
  }
  await clocked.verifyJwtOnce(service);
  assertEquals(clocked.signatureChecks, 1);
  // A bad signature is never cached as verified.
  const forged = service.slice(0, -4) + (service.endsWith("AAAA") ? "BBBB" : "AAAA");
  for (let i = 0; i < 2; i++) {
    assertEquals(
      await clocked.verifyJwtOnce(forged).then(() => 200, (e) => toProblem(e).status),
      401,
    );
  }
  assertEquals(clocked.signatureChecks, 3);
});
