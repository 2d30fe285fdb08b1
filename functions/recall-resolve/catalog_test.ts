import { assert, assertEquals } from "../../scripts/testing/assert.ts";
import { seed } from "../../scripts/testing/seed.ts";
import { functionTestEnv } from "../../scripts/testing/test_env.ts";
import { suite } from "../../scripts/testing/test_http.ts";
import { Budget } from "../../shared/http/budget.ts";
import { recallResolveConfig } from "./config.ts";
import { Providers } from "./providers.ts";

const it = suite("recall-resolve catalog", async () => {
  const env = await functionTestEnv();
  await seed(env.db.sql, { users: 5, posts: 0, follows: 0, likes: 0, songs: 2000, seed: 9 });
  const providers = new Providers(env.deps, recallResolveConfig(env.env));
  return { env, providers, close: () => env.close() };
});

it(
  "catalog search: stop words alone find nothing, without a trigram pass over the catalog",
  async ({ env, providers }) => {
    const rows = await env.db.sql`select * from public.search_songs(${"or ".repeat(160)}, 5)`;
    assertEquals(rows.length, 0);
    assertEquals(
      await providers.searchCatalog("or or or or the of or and or", new Budget(5000)),
      [],
    );
  },
);

it("catalog search: at most 50 ranked, whatever limit it is given", async ({ env }) => {
  const [word] = (await env.db.sql`select lyrics_excerpt from songs limit 1`)[0].lyrics_excerpt
    .split(" ").filter((w: string) => w.length > 4);
  const many = await env.db.sql`select id from public.search_songs(${word}, 1000)`;
  assertEquals(many.length <= 50, true);
  assert(many.length > 0, word);
});

it(
  "catalog search runs in the search lane with its own short statement timeout",
  async ({ env, providers }) => {
    const { gate } = env.deps.db;
    const locker = await env.db.sql.reserve();
    await locker`begin`;
    await locker`lock table public.songs in access exclusive mode`;
    try {
      const start = performance.now();
      const search = providers.searchCatalog("midnight ferry", new Budget(10_000));
      assertEquals(gate.inUse, { total: 1, search: 1 }); // taken synchronously
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
    assertEquals(gate.inUse.total, 0);
  },
);
