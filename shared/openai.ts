/**
 * The isolate's OpenAI client (`openai` SDK) and the two APIs we call through it, each with
 * its circuit breaker. The SDK's own retries are off: `shared/upstream.ts` retries, within the
 * request budget and the API's retry budget, and the breaker counts every attempt.
 *
 * @module
 */
import OpenAI from "openai";
import { config } from "./config.ts";
import { upstream } from "./upstream.ts";

/** null when `OPENAI_API_KEY` is not set: callers degrade (catalog only, extractive summaries). */
export const openai: OpenAI | null = config.openai
  ? new OpenAI({
    apiKey: config.openai.apiKey,
    ...(config.openai.baseUrl ? { baseURL: config.openai.baseUrl } : {}),
    maxRetries: 0,
    timeout: 60_000, // an outer bound only: each call passes its own AbortSignal
  })
  : null;

/** Chat completions (intent, candidates, summaries, persona replies). */
export const openaiChat = upstream("openai-chat", { timeoutMs: 30_000 });

/** Audio transcriptions. */
export const openaiTranscribe = upstream("openai-transcribe", { timeoutMs: 10_000 });

/** Token usage of one chat call, for the cost metrics. */
export interface ChatUsage {
  model: string;
  promptTokens: number;
  completionTokens: number;
}

/**
 * One chat completion whose answer must match `schema` (JSON schema response format). Throws
 * when the model's answer is not JSON.
 */
export async function chatJson<T>(
  params: {
    model: string;
    system: string;
    user: string;
    schemaName: string;
    schema: Record<string, unknown>;
    maxTokens?: number;
  },
  signal: AbortSignal,
): Promise<{ value: T; usage: ChatUsage }> {
  if (!openai) throw new Error("OpenAI is not configured");
  const completion = await openai.chat.completions.create({
    model: params.model,
    messages: [{ role: "system", content: params.system }, { role: "user", content: params.user }],
    response_format: {
      type: "json_schema",
      json_schema: { name: params.schemaName, schema: params.schema, strict: true },
    },
    ...(params.maxTokens ? { max_tokens: params.maxTokens } : {}),
  }, { signal });
  const content = completion.choices[0]?.message?.content;
  if (!content) throw new Error("the model returned no content");
  return {
    value: JSON.parse(content) as T,
    usage: {
      model: completion.model ?? params.model,
      promptTokens: completion.usage?.prompt_tokens ?? 0,
      completionTokens: completion.usage?.completion_tokens ?? 0,
    },
  };
}
