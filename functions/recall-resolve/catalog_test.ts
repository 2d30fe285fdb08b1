import { assert, assertEquals } from "../../scripts/testing/assert.ts";
import { seed } from "../../scripts/testing/seed.ts";
import { functionTestEnv } from "../../scripts/testing/test_env.ts";
import { it } from "../../scripts/testing/test_http.ts";

const env = await functionTestEnv();
await seed(env.db.sql, { users: 5, posts: 0, follows: 0, likes: 0, songs: 2000, seed: 9 });
const { searchCatalog } = await import("./providers.ts");
const { Budget } = await import("../../shared/budget.ts");
const db = await import("../../shared/db.ts");

it("catalog search: stop words alone find nothing, without a trigram pass over the catalog", async () => {
  const rows = await env.db.sql`select * from public.search_songs(${"or ".repeat(160)}, 5)`;
  assertEquals(rows.length, 0);
  assertEquals(await searchCatalog("or or or or the of or and or", new Budget(5000)), []);
});

it("catalog search: at most 50 ranked, whatever limit it is given", async () => {
  const [word] = (await env.db.sql`select lyrics_excerpt from songs limit 1`)[0].lyrics_excerpt
    .split(" ").filter((w: string) => w.length > 4);
  const many = await env.db.sql`select id from public.search_songs(${word}, 1000)`;
  assertEquals(many.length <= 50, true);
  assert(many.length > 0, word);
});

it("catalog search runs in the search lane with its own short statement timeout", async () => {
  const locker = await env.db.sql.reserve();
  await locker`begin`;
  await locker`lock table public.songs in access exclusive mode`;
  try {
    const start = performance.now();
    const search = searchCatalog("midnight ferry", new Budget(10_000));
    assertEquals(db.poolGate.inUse, { total: 1, search: 1 }); // taken synchronously
    const err = await search.catch((e) => e);
    const elapsed = performance.now() - start;
    assertEquals(err?.code, "57014");
    // SEARCH_STATEMENT_TIMEOUT_MS (300), not DB_STATEMENT_TIMEOUT_MS (5000) nor the budget:
    // well under 5000 however loaded the box is.
    assert(elapsed < 4000, `ended after ${elapsed} ms`);
  } finally {
    await locker`rollback`;
    locker.release();
  }
  assertEquals(db.poolGate.inUse.total, 0);
});

it("teardown", async () => {
  await (await import("../../shared/background.ts")).settleBackground();
  await db.sql.end();
  await db.healthSql.end();
  await env.close();
});
