/**
 * The isolate's OpenAI client (`openai` SDK), made on first use, and the two APIs we call
 * through it, each with its circuit breaker. The SDK's own retries are off:
 * `shared/resilience/upstream.ts` retries, within the request budget and the API's retry budget, and the
 * breaker counts every attempt.
 *
 * @module
 */
import type OpenAI from "openai";
import { untilAborted } from "../resilience/abort.ts";
import type { Breakers } from "../resilience/breaker.ts";
import type { Config } from "../config.ts";
import { type Upstream, upstream } from "../resilience/upstream.ts";

/** OpenAI as an isolate uses it. */
export interface OpenAIApis {
  /**
   * The SDK client, imported and made on first call: the SDK is the heaviest module we use,
   * and a request that never calls OpenAI (every cached read) should not pay for loading it
   * at cold start. null when `OPENAI_API_KEY` is not set: callers degrade (catalog only,
   * extractive summaries). A model call takes it through {@link withClient}, inside the
   * call's timeout and budget.
   */
  client(): Promise<OpenAI | null>;
  /** Model names (`OPENAI_*_MODEL`), null when OpenAI is not configured. */
  models: { small: string; large: string; transcribe: string } | null;
  /** Chat completions (intent, candidates, summaries, persona replies). */
  chat: Upstream;
  /** Audio transcriptions. */
  transcribe: Upstream;
}

/** OpenAI of `config.openai`, its breakers from `breakers`. */
export function openaiApis(config: Config["openai"], breakers: Breakers): OpenAIApis {
  let made: Promise<OpenAI> | undefined;
  return {
    client() {
      if (!config) return Promise.resolve(null);
      return made ??= import("openai").then(({ default: OpenAI }) =>
        new OpenAI({
          apiKey: config.apiKey,
          ...(config.baseUrl ? { baseURL: config.baseUrl } : {}),
          maxRetries: 0,
          timeout: 60_000, // an outer bound only: each call passes its own AbortSignal
        })
      ).catch((err) => {
        made = undefined; // a load that failed is tried again by the next call
        throw err;
      });
    },
    models: config
      ? { small: config.smallModel, large: config.largeModel, transcribe: config.transcribeModel }
      : null,
    chat: upstream("openai-chat", { timeoutMs: 30_000, breaker: breakers.get("openai-chat") }),
    transcribe: upstream("openai-transcribe", {
      timeoutMs: 10_000,
      breaker: breakers.get("openai-transcribe"),
    }),
  };
}

/**
 * The call `callUpstream` makes to OpenAI, given the SDK client: the client is loaded first
 * (a dynamic import on the isolate's first model call), inside the call, so that load counts
 * against the call's timeout and the request budget like the request after it. A load that
 * outlasts them ends the call with the signal's reason, as a slow answer would (the import
 * goes on, for the next call). Throws when OpenAI is not configured.
 */
export function withClient<T>(
  openai: Pick<OpenAIApis, "client">,
  call: (client: OpenAI, signal: AbortSignal) => Promise<T>,
): (signal: AbortSignal) => Promise<T> {
  return async (signal) => {
    const client = await untilAborted(openai.client(), signal);
    if (!client) throw new Error("OpenAI is not configured (OPENAI_API_KEY is not set)");
    signal.throwIfAborted();
    return call(client, signal);
  };
}

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
  openai: OpenAI,
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
