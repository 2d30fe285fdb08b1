/**
 * Database tooling: bootstrap a plain Postgres to look like Supabase, apply
 * `migrations/` with the Supabase CLI, create/drop databases.
 *
 *   deno run -A scripts/dev/db.ts migrate      # bootstrap + migrate DATABASE_URL (default: npm start's)
 *   deno run -A scripts/dev/db.ts bootstrap    # bootstrap only
 *
 * Layout: the top-level `migrations/` folder is the source of truth. The
 * Supabase CLI (3.x) only reads `<workdir>/supabase/migrations/*.sql` and does
 * NOT follow a `supabase/migrations` directory symlink (it silently reports
 * "up to date"), but it does follow symlinked files. So `migrate()` builds a
 * throwaway workdir whose `supabase/migrations/` holds one symlink per
 * migration file and points the CLI at it.
 */
import postgres from "postgres";

/** Absolute path of the repository root (this file lives in `<repo>/scripts`). */
export const REPO_ROOT = decodeURIComponent(
  new URL("../../", import.meta.url).pathname,
).replace(/\/$/, "");
export const MIGRATIONS_DIR = `${REPO_ROOT}/migrations`;
export const BOOTSTRAP_SQL = `${REPO_ROOT}/scripts/dev/bootstrap.sql`;
export const SUPABASE_BIN = `${REPO_ROOT}/node_modules/.bin/supabase`;

const MIGRATION_FILE = /^\d{14}_[A-Za-z0-9_\-]+\.sql$/;
const DB_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** Short-lived admin client (one connection, notices silenced). */
export function connect(url: string, options: postgres.Options<Record<string, never>> = {}) {
  return postgres(url, {
    max: 1,
    onnotice: () => {},
    connection: { application_name: "rockout-db-tools" },
    ...options,
  });
}

/** Runs scripts/dev/bootstrap.sql (multi-statement, simple protocol). Idempotent. */
export async function bootstrap(url: string): Promise<void> {
  const text = await Deno.readTextFile(BOOTSTRAP_SQL);
  const sql = connect(url);
  try {
    await sql.unsafe(text).simple();
  } finally {
    await sql.end();
  }
}

/** Migration file names in `migrations/`, sorted. */
export async function migrationFiles(dir = MIGRATIONS_DIR): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile && MIGRATION_FILE.test(entry.name)) names.push(entry.name);
  }
  return names.sort();
}

/**
 * Applies `migrations/` to `url` with `supabase migration up --db-url`.
 * Returns the CLI's output; throws with it when the CLI fails.
 */
export async function migrate(url: string): Promise<string> {
  const files = await migrationFiles();
  if (files.length === 0) throw new Error(`no migrations found in ${MIGRATIONS_DIR}`);
  // migrations/ is a link to supabase/migrations, where the CLI looks (it skips a linked
  // directory there), so the CLI runs on the repository itself.
  const out = await new Deno.Command(SUPABASE_BIN, {
    args: ["migration", "up", `--db-url=${cliUrl(url)}`, "--yes", "--workdir", REPO_ROOT],
    cwd: REPO_ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { SUPABASE_TELEMETRY_DISABLED: "1", DO_NOT_TRACK: "1" },
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) {
    throw new Error(`supabase migration up failed (exit ${out.code}) for ${redact(url)}:\n${text}`);
  }
  return text;
}

/**
 * The CLI insists on TLS unless told otherwise; local servers (embedded Postgres) have none.
 */
function cliUrl(url: string): string {
  const u = new URL(url);
  if (!u.searchParams.has("sslmode") && ["127.0.0.1", "localhost", "[::1]"].includes(u.hostname)) {
    u.searchParams.set("sslmode", "disable");
  }
  return u.href;
}

function ident(name: string): string {
  if (!DB_NAME.test(name)) throw new Error(`invalid database name: ${JSON.stringify(name)}`);
  return `"${name}"`;
}

/**
 * `create database <name> [template <template>]` on the server of `adminUrl`.
 * Copying a template fails while anyone is connected to it (55006): retried.
 */
export async function createDatabase(
  adminUrl: string,
  name: string,
  template?: string,
): Promise<void> {
  const stmt = `create database ${ident(name)}` + (template ? ` template ${ident(template)}` : "");
  const sql = connect(adminUrl);
  try {
    for (let attempt = 0;; attempt++) {
      try {
        await sql.unsafe(stmt);
        return;
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (template && code === "55006" && attempt < 50) {
          await new Promise((r) => setTimeout(r, 100));
          continue;
        }
        throw err;
      }
    }
  } finally {
    await sql.end();
  }
}

/** `drop database if exists <name> with (force)` (terminates its sessions). */
export async function dropDatabase(adminUrl: string, name: string): Promise<void> {
  const sql = connect(adminUrl);
  try {
    await sql.unsafe(`drop database if exists ${ident(name)} with (force)`);
  } finally {
    await sql.end();
  }
}

/** The URL of database `dbName` on the same server (and options) as `adminUrl`. */
export function databaseUrl(adminUrl: string, dbName: string): string {
  const u = new URL(adminUrl);
  u.pathname = `/${encodeURIComponent(dbName)}`;
  return u.toString();
}

/** The URL without its password, for messages. */
export function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "<unparseable url>";
  }
}

if (import.meta.main) {
  const cmd = Deno.args[0] ?? "migrate";
  // Default: the database of the running `npm start`.
  const { useLocalStack } = await import("./stack.ts");
  await useLocalStack();
  const url = Deno.env.get("DATABASE_URL");
  if (!url) {
    console.error(
      "no database: start the stack (npm start) in another terminal, or set DATABASE_URL, e.g.\n" +
        "  DATABASE_URL=postgres://postgres@127.0.0.1:5432/rockout npm run migrate",
    );
    Deno.exit(2);
  }
  try {
    if (cmd === "bootstrap") {
      await bootstrap(url);
      console.log(`bootstrap applied to ${redact(url)}`);
    } else if (cmd === "migrate") {
      await bootstrap(url);
      console.log(`bootstrap applied to ${redact(url)}`);
      console.log((await migrate(url)).trim());
    } else {
      console.error(`unknown command ${JSON.stringify(cmd)} (expected: migrate | bootstrap)`);
      Deno.exit(2);
    }
  } catch (err) {
    console.error(err instanceof Error ? err.message : err);
    Deno.exit(1);
  }
}
