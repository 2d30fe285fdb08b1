/**
 * Many seeded users, each with an access token, for a scenario's setup(). Tokens are signed
 * with the local key of `npm start` (`.local/jwt-signing-key.json`, or TOKEN_KEY_FILE).
 *
 * @module
 */
import { loadOrCreateDevKeys } from "../../scripts/dev/dev_auth.ts";
import { repoRoot } from "../../scripts/dev/local_services.ts";
import { seededUserId } from "../../scripts/testing/seed.ts";

/** A user of the load test. */
export interface LoadUser {
  id: string;
  token: string;
}

/** Tokens for seeded users 1..n (the demo user 0 is left to humans). */
export async function seededUsers(n: number, ttlS = 4 * 3600): Promise<LoadUser[]> {
  const keys = await loadOrCreateDevKeys(
    Deno.env.get("TOKEN_KEY_FILE") ?? `${repoRoot}/.local/jwt-signing-key.json`,
  );
  const users: LoadUser[] = [];
  for (let i = 1; i <= n; i++) {
    const id = seededUserId(i);
    users.push({ id, token: await keys.mint(id, { ttlS }) });
  }
  return users;
}

/** `Authorization` header of a user. */
export function auth(user: LoadUser): Record<string, string> {
  return { authorization: `Bearer ${user.token}` };
}

/** A number from the environment, else `fallback` (scenarios are compressed in CI this way). */
export function envNumber(name: string, fallback: number): number {
  const v = Deno.env.get(name);
  return v === undefined || v === "" ? fallback : Number(v);
}
