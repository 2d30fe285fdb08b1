/**
 * The "before" shape our users come from: a feed handler that opens a new database
 * connection per request, fetches the posts, then each author's profile one by one (N+1),
 * sequentially. Deliberately naive — it is what the benchmark compares against.
 *
 * Env: DATABASE_URL, PORT.
 *
 * @module
 */
import postgres from "postgres";

const url = Deno.env.get("DATABASE_URL")!;

Deno.serve({
  hostname: "127.0.0.1",
  port: Number(Deno.env.get("PORT")),
  onListen: () => console.log("ready"),
}, async () => {
  const sql = postgres(url, { max: 1, prepare: false });
  try {
    const posts = await sql`
      select id, author_id, body, like_count, reply_count, created_at from public.posts
      where status = 'published' order by created_at desc limit 20`;
    const items = [];
    for (const post of posts) {
      const [author] =
        await sql`select id, username, display_name, avatar_url from public.profiles where id = ${post.author_id}`;
      items.push({ ...post, author });
    }
    return Response.json({ items });
  } finally {
    await sql.end();
  }
});
