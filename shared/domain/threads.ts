/**
 * A post and one keyset page of its replies (oldest first), read in one statement as the
 * caller: the shapes and the query that `posts` and `thread-summary` answer with.
 *
 * @module
 */
import { z } from "@hono/zod-openapi";
import { keyFormats } from "../data/cursor.ts";
import type { Tx } from "../data/db.ts";
import { type Keyset, pageArgs, toPage } from "../data/keyset.ts";

/** Replies per page (and the most a client may ask for). */
export const maxRepliesPage = 100;

/** The author columns every post and reply carries. */
export const Author = z.object({
  id: z.guid(),
  username: z.string(),
  display_name: z.string().nullable(),
  avatar_url: z.string().nullable(),
}).openapi("Author");

/** A post as the caller sees it. */
export const Post = z.object({
  id: z.guid(),
  author: Author,
  body: z.string(),
  media_url: z.string().nullable(),
  thumbnail_url: z.string().nullable(),
  status: z.enum(["draft", "published", "deleted"]),
  like_count: z.number().int(),
  reply_count: z.number().int(),
  replies_updated_at: z.string().nullable(),
  created_at: z.string(),
  liked_by_me: z.boolean(),
}).openapi("Post");

/** A reply: by a person (`author`) or an AI persona (`persona_id`, `author` null). */
export const Reply = z.object({
  id: z.guid(),
  post_id: z.guid(),
  author: Author.nullable(),
  persona_id: z.guid().nullable(),
  body: z.string(),
  like_count: z.number().int(),
  created_at: z.string(),
}).openapi("Reply");

/** A page of replies. */
export const ReplyPage = z.object({ items: z.array(Reply), next_cursor: z.string().nullable() })
  .openapi("ReplyPage");

export type PostT = z.infer<typeof Post>;
export type ReplyT = z.infer<typeof Reply>;
export type ReplyPageT = z.infer<typeof ReplyPage>;

/** A post, one page of its replies, and the version of its replies (exact database text). */
export interface Thread {
  post: PostT;
  replies: ReplyPageT;
  /** `posts.replies_updated_at::text`: what a summary is computed for; null without replies. */
  repliesVersion: string | null;
}

const repliesKeyset: Keyset = { tag: "replies", key: keyFormats.timestamptz };
/** Before every reply: where the first page starts. */
const firstReply = { key: "-infinity", id: "00000000-0000-0000-0000-000000000000" };

/**
 * The post `postId` (null when the caller can't see it, or it is deleted) and the replies
 * after `cursor`, oldest first: one statement (replies are one range of
 * `replies_post_page_idx`).
 */
export async function readThread(
  tx: Tx,
  postId: string,
  cursor: string | undefined,
  limit: number,
): Promise<Thread | null> {
  const p = pageArgs(repliesKeyset, limit, cursor);
  const after = p.after ?? firstReply;
  const [row] = await tx`
    select p.id, p.body, p.media_url, p.thumbnail_url, p.status, p.like_count, p.reply_count,
      p.replies_updated_at, p.replies_updated_at::text as replies_version, p.created_at,
      public.author_json(a) as author,
      exists (select 1 from public.likes l
              where l.user_id = (select auth.uid()) and l.post_id = p.id) as liked_by_me,
      coalesce((
        select jsonb_agg(jsonb_build_object(
            'id', r.id, 'post_id', r.post_id, 'persona_id', r.persona_id, 'body', r.body,
            'like_count', r.like_count, 'created_at', r.created_at, 'cursor_key', r.cursor_key,
            'author', case when ra.id is null then null else public.author_json(ra) end)
          order by r.created_at, r.id)
        from (
          select r.*, r.created_at::text as cursor_key from public.replies r
          where r.post_id = p.id
            and (r.created_at, r.id) > (${after.key}::text::timestamptz, ${after.id}::uuid)
          order by r.created_at, r.id
          limit ${p.fetch}
        ) r
        left join public.profiles ra on ra.id = r.author_id
      ), '[]'::jsonb) as replies
    from public.posts p
    join public.profiles a on a.id = p.author_id
    where p.id = ${postId} and p.status <> 'deleted'`;
  if (!row) return null;
  type RawReply = ReplyT & { cursor_key: string };
  const raw = row.replies as RawReply[];
  return {
    post: toPost(row),
    replies: toPage(repliesKeyset, p, raw, ({ cursor_key: _, ...reply }) => ({
      ...reply,
      created_at: new Date(reply.created_at).toISOString(),
    })),
    repliesVersion: row.replies_version ?? null,
  };
}

/** A posts row (with `author`, `liked_by_me`) as the API answers it. */
export function toPost(row: Record<string, unknown>): PostT {
  const version = row.replies_updated_at ?? null;
  return {
    id: row.id as string,
    author: row.author as PostT["author"],
    body: row.body as string,
    media_url: (row.media_url ?? null) as string | null,
    thumbnail_url: (row.thumbnail_url ?? null) as string | null,
    status: row.status as PostT["status"],
    like_count: Number(row.like_count),
    reply_count: Number(row.reply_count),
    replies_updated_at: version === null ? null : new Date(version as string).toISOString(),
    created_at: new Date(row.created_at as string).toISOString(),
    liked_by_me: Boolean(row.liked_by_me),
  };
}
