/**
 * The OpenAI stand-in `npm start` serves when no OPENAI_API_KEY is set, so a newcomer's
 * persona replies, thread summaries and recall model steps produce something. Every
 * generated text starts with {@link STAND_IN_MARK}, so nobody mistakes it for a model's
 * answer. It is the test fake (scripts/testing/fakes/openai.ts) with canned, input-shaped answers.
 *
 * @module
 */
import { type ChatRequest, type OpenAIFake, startOpenAIFake } from "../testing/fakes/openai.ts";

/** The prefix of every stand-in text. */
export const STAND_IN_MARK = "[stand-in]";

const clip = (text: string, n: number) => {
  const t = text.replace(/\s+/g, " ").trim();
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
};

/** The stand-in's answer to one chat call, by the JSON schema the caller asked for. */
export function standInAnswer(req: ChatRequest): unknown {
  const system = req.messages.find((m) => m.role === "system")?.content ?? "";
  const user = req.messages.findLast((m) => m.role === "user")?.content ?? "";
  switch (req.schemaName) {
    case "persona_reply": {
      const persona = system.match(/You are "([^"]+)"/)?.[1] ?? "a persona";
      const post = user.replace(/^Reply to this post:\s*/, "");
      return {
        reply: `${STAND_IN_MARK} ${persona} would reply to "${clip(post, 80)}" here ` +
          "(set OPENAI_API_KEY for real replies).",
      };
    }
    case "thread_summary": {
      const count = user.match(/Replies \(the newest (\d+) of (\d+)/);
      return {
        summary: `${STAND_IN_MARK} A summary of ${count?.[2] ?? "the"} replies would go here ` +
          "(set OPENAI_API_KEY for real summaries).",
      };
    }
    case "recall_intent":
      return {
        lyrics_fragment: null,
        title_hint: null,
        artist_hint: null,
        description: `${STAND_IN_MARK} ${clip(user, 80)}`,
        era: null,
      };
    case "recall_candidates":
      return {
        candidates: [{
          title: `${STAND_IN_MARK} a song the model would suggest`,
          artist: STAND_IN_MARK,
          album: null,
          year: null,
          confidence: 0.05,
          reason: `${STAND_IN_MARK} no model configured: set OPENAI_API_KEY for real candidates`,
        }],
      };
    default:
      return { text: `${STAND_IN_MARK} (set OPENAI_API_KEY for real answers)` };
  }
}

/** Starts the stand-in on `port` (0: any free port); its `baseUrl` is OPENAI_BASE_URL. */
export function startOpenAIStandIn(port = 0): OpenAIFake {
  const fake = startOpenAIFake({
    chat: standInAnswer,
    transcribe: () => `${STAND_IN_MARK} a transcription (set OPENAI_API_KEY for real ones)`,
    usage: { prompt_tokens: 0, completion_tokens: 0 },
  }, port);
  // The fake keeps every call for tests' assertions; a long-running stand-in must not.
  const trim = setInterval(() => fake.calls.splice(0), 10_000);
  Deno.unrefTimer(trim);
  const close = fake.close;
  fake.close = () => {
    clearInterval(trim);
    return close();
  };
  return fake;
}
