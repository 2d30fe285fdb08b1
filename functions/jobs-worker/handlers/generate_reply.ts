/**
 * `generate_reply`: one AI persona replies to one post. The LLM call goes through the
 * OpenAI breaker with the task's timeout; the reply is inserted idempotently (one per
 * persona per post, ON CONFLICT DO NOTHING) and the post's author is notified in the same
 * statement, only when the reply was actually inserted. A failed call throws: the job is
 * retried with backoff, never lost.
 *
 * @module
 */
import type { Database } from "../../../shared/data/db.ts";
import type { ReplyPayload } from "../../../shared/domain/reply_jobs.ts";
import { type JobHandler, PermanentJobError } from "../../../shared/jobs/pool.ts";
import { chatJson, type OpenAIApis, withClient } from "../../../shared/providers/openai.ts";
import { callUpstream } from "../../../shared/resilience/upstream.ts";
import * as q from "../queries.ts";

const replySchema = {
  type: "object",
  properties: { reply: { type: "string" } },
  required: ["reply"],
  additionalProperties: false,
};
const maxReplyChars = 2000;

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const notConfigured = "OpenAI is not configured (OPENAI_API_KEY is not set)";

/** The payload's targets, or null when it does not name both as uuids. */
function replyPayload(payload: Record<string, unknown>): ReplyPayload | null {
  const { post_id, persona_id } = payload ?? {};
  return typeof post_id === "string" && uuidPattern.test(post_id) &&
      typeof persona_id === "string" && uuidPattern.test(persona_id)
    ? { post_id, persona_id }
    : null;
}

/**
 * The handler writing the reply of the payload's `persona_id` to its `post_id`: reads and
 * writes through `db`, asks `openai`'s small model.
 */
export function generateReplyHandler(
  { db, openai }: { db: Database; openai: OpenAIApis },
): JobHandler {
  return async (job, { budget, signal }) => {
    const ids = replyPayload(job.payload);
    if (!ids) {
      throw new PermanentJobError("generate_reply needs post_id and persona_id in its payload");
    }
    const { post_id: postId, persona_id: personaId } = ids;
    // Workers don't claim this type without OpenAI; this guards a misconfigured deployment.
    const models = openai.models;
    if (!models) throw new PermanentJobError(notConfigured);
    // Through the isolate's pool gate, like request work: a slow job can't take every
    // connection, and its statements are cancelled when the task times out.
    const [target] = await db.query(q.replyTarget(db.sql, postId, personaId), signal);
    // Deleted post or persona, unpublished post, or a previous run already replied (a
    // worker lost after its insert): nothing to do, and no LLM call to pay for.
    if (!target || target.post_status !== "published" || target.replied) return;

    const { value } = await callUpstream(
      openai.chat,
      withClient(openai, (client, signal) =>
        chatJson<{ reply: string }>(client, {
          model: models.small,
          system: `${target.style_prompt}\nYou are "${target.persona_name}" on RockOut, ` +
            'a social app about music. Answer with JSON: {"reply": "…"}.',
          user: `Reply to this post:\n\n${target.post_body}`,
          schemaName: "persona_reply",
          schema: replySchema,
          maxTokens: 300,
        }, signal)),
      { budget },
    );
    const body = typeof value?.reply === "string" ? value.reply.trim().slice(0, maxReplyChars) : "";
    if (!body) throw new Error("the model returned an empty reply");

    await db.query(
      q.insertReply(db.sql, postId, personaId, target.persona_name, body),
      signal,
    );
  };
}
