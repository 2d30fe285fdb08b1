/**
 * Test harness: a fresh, migrated database per test (or per file).
 *
 *   await using db = await testDatabase();
 *   await db.sql`select 1`;
 *
 * Server: TEST_ADMIN_DATABASE_URL, else DATABASE_URL, else
 * postgres://postgres@127.0.0.1:5432/postgres. When TEST_TEMPLATE_DB names a
 * template (built once by the `npm test` orchestrator with buildTemplate()),
 * the database is a copy of it (fast); otherwise it is bootstrapped and
 * migrated with the Supabase CLI.
 */
import postgres from "postgres";
import { bootstrap, createDatabase, databaseUrl, dropDatabase, migrate } from "../dev/db.ts";

export interface TestDatabase {
  url: string;
  name: string;
  sql: postgres.Sql;
  [Symbol.asyncDispose](): Promise<void>;
}

/** The admin URL tests create their databases with. */
export function adminUrl(): string {
  return Deno.env.get("TEST_ADMIN_DATABASE_URL") ?? Deno.env.get("DATABASE_URL") ??
    "postgres://postgres@127.0.0.1:5432/postgres";
}

function randomName(prefix: string): string {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A fresh database `rockout_t_<random>`; disposing it drops it (force). */
export async function testDatabase(
  options: postgres.Options<Record<string, never>> = {},
): Promise<TestDatabase> {
  const admin = adminUrl();
  const name = randomName("rockout_t_");
  const template = Deno.env.get("TEST_TEMPLATE_DB") || undefined;
  await createDatabase(admin, name, template);
  const url = databaseUrl(admin, name);
  try {
    if (!template) {
      await bootstrap(url);
      await migrate(url);
    }
  } catch (err) {
    await dropDatabase(admin, name);
    throw err;
  }
  const sql = postgres(url, { max: 4, onnotice: () => {}, ...options });
  return {
    url,
    name,
    sql,
    async [Symbol.asyncDispose]() {
      try {
        await sql.end({ timeout: 5 });
      } finally {
        await dropDatabase(admin, name);
      }
    },
  };
}

/**
 * Builds a migrated template database `rockout_tmpl_<random>` and returns its
 * name (set it as TEST_TEMPLATE_DB for the test processes). All connections to
 * it are closed on return, so it can be copied.
 */
export async function buildTemplate(admin: string = adminUrl()): Promise<string> {
  const name = randomName("rockout_tmpl_");
  await createDatabase(admin, name);
  try {
    const url = databaseUrl(admin, name);
    await bootstrap(url);
    await migrate(url);
  } catch (err) {
    await dropDatabase(admin, name);
    throw err;
  }
  return name;
}

/** Drops a template built by buildTemplate(). */
export async function dropTemplate(admin: string, name: string): Promise<void> {
  await dropDatabase(admin, name);
}
