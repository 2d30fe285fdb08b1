/**
 * `npm run token -- [user-uuid]`: a 1-hour access token for the demo user or the given one,
 * signed with the local key in .local/ (the one `npm start` serves). The user (auth.users)
 * and their profile are created when missing, so the token can post and edit its profile at
 * once. The database is the running `npm start`'s (.local/stack.json) unless DATABASE_URL
 * is set. Only the token goes to stdout: `export TOKEN=$(npm run -s token)`.
 *
 * @module
 */
import postgres from "postgres";
import { redact } from "../dev/db.ts";
import { loadOrCreateDevKeys } from "../dev/dev_auth.ts";
import { repoRoot } from "../dev/local_services.ts";
import { DEMO_USER_ID } from "./seed.ts";
import { useLocalStack } from "../dev/stack.ts";

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** What {@link ensureUser} did. */
export interface EnsuredUser {
  createdUser: boolean;
  createdProfile: boolean;
  username: string;
}

/**
 * Creates `auth.users` row and `public.profiles` row for `userId` when missing (what sign-up
 * does on Supabase), as the database owner. Username `user_<8 hex>`, longer when taken.
 */
export async function ensureUser(sql: postgres.Sql, userId: string): Promise<EnsuredUser> {
  const email = `${userId.slice(0, 8)}@rockout.local`;
  const users = await sql`
    insert into auth.users (id, email, role, aud, raw_user_meta_data, raw_app_meta_data,
      email_confirmed_at)
    values (${userId}, ${email}, 'authenticated', 'authenticated', '{}', 
      '{"provider": "email", "providers": ["email"]}', now())
    on conflict (id) do nothing
    returning id`;
  const [existing] = await sql`select username from public.profiles where id = ${userId}`;
  if (existing) {
    return { createdUser: users.length > 0, createdProfile: false, username: existing.username };
  }
  const hex = userId.replaceAll("-", "");
  for (const length of [8, 16, 25]) {
    const username = `user_${hex.slice(0, length)}`;
    const rows = await sql`
      insert into public.profiles (id, username, display_name)
      values (${userId}, ${username}, ${`User ${hex.slice(0, 8)}`})
      on conflict do nothing
      returning username`;
    if (rows.length) return { createdUser: users.length > 0, createdProfile: true, username };
    const [now] = await sql`select username from public.profiles where id = ${userId}`;
    if (now) {
      return { createdUser: users.length > 0, createdProfile: false, username: now.username };
    }
  }
  throw new Error(`no free username for ${userId}`);
}

if (import.meta.main) {
  const userId = (Deno.args[0] ?? DEMO_USER_ID).toLowerCase();
  if (!uuid.test(userId)) {
    console.error(`not a user id (uuid): ${Deno.args[0]}`);
    Deno.exit(2);
  }
  const stack = await useLocalStack();
  const databaseUrl = Deno.env.get("DATABASE_URL");
  if (databaseUrl) {
    const sql = postgres(databaseUrl, { max: 1, onnotice: () => {}, connect_timeout: 5 });
    try {
      const r = await ensureUser(sql, userId);
      if (r.createdUser || r.createdProfile) {
        console.error(
          `created ${r.createdUser ? "user and " : ""}profile @${r.username} for ${userId}`,
        );
      }
    } catch (err) {
      console.error(
        `could not create the user in ${redact(databaseUrl)}: ${
          err instanceof Error ? err.message : err
        }`,
      );
      Deno.exit(1);
    } finally {
      await sql.end();
    }
  } else {
    console.error(
      "no database (npm start is not running and DATABASE_URL is not set): the token is " +
        "signed, but a user without a profile can't post (409) or edit it (404)",
    );
  }
  const keys = await loadOrCreateDevKeys(`${repoRoot}/.local/jwt-signing-key.json`);
  const issuer = stack
    ? `${stack.baseUrl}/auth/v1`
    : `http://127.0.0.1:${Number(Deno.env.get("PORT") ?? 54321)}/auth/v1`;
  console.log(await keys.mint(userId, { issuer }));
}
