/**
 * `npm run token -- [user-uuid]`: a 1-hour access token for the demo user or the given one,
 * signed with the local key in .local/ (the one `npm start` serves).
 *
 * @module
 */
import { loadOrCreateDevKeys } from "./dev_auth.ts";
import { repoRoot } from "./local_services.ts";
import { DEMO_USER_ID } from "./seed.ts";

const userId = Deno.args[0] ?? DEMO_USER_ID;
if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(userId)) {
  console.error(`not a user id (uuid): ${userId}`);
  Deno.exit(2);
}
const keys = await loadOrCreateDevKeys(`${repoRoot}/.local/jwt-signing-key.json`);
const port = Number(Deno.env.get("PORT") ?? 54321);
console.log(await keys.mint(userId, { issuer: `http://127.0.0.1:${port}/auth/v1` }));
