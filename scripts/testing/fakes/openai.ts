/**
 * A local stand-in for the OpenAI API (chat completions with JSON-schema output, audio
 * transcriptions), reached through OPENAI_BASE_URL. Tests decide what the "model" answers,
 * and can make it slow, failing, hanging or malformed (see FakeServer.behave), per path.
 *
 * @module
 */
import { type FakeServer, startFakeServer } from "../fake_http.ts";

/** What a chat call asked for. */
export interface ChatRequest {
  model: string;
  messages: { role: string; content: string }[];
  /** `response_format.json_schema.name`, when given. */
  schemaName?: string;
}

/** The fake, plus counters per endpoint. */
export interface OpenAIFake extends FakeServer {
  /** `OPENAI_BASE_URL` for the code under test. */
  baseUrl: string;
  chatCalls(): number;
  transcriptionCalls(): number;
}

/**
 * Starts the fake. `chat` returns the object the model "answers" (serialized as the message
 * content); `transcribe` the text of an audio upload.
 */
export function startOpenAIFake(
  options: {
    chat?: (req: ChatRequest) => unknown;
    transcribe?: (body: string) => string;
    usage?: { prompt_tokens: number; completion_tokens: number };
  } = {},
  port = 0,
): OpenAIFake {
  const usage = options.usage ?? { prompt_tokens: 120, completion_tokens: 40 };
  const server = startFakeServer(port, (req, body) => {
    const path = new URL(req.url).pathname;
    if (path.endsWith("/audio/transcriptions")) {
      return { text: options.transcribe?.(body) ?? "a transcription" };
    }
    if (path.endsWith("/chat/completions")) {
      const parsed = JSON.parse(body);
      const request: ChatRequest = {
        model: parsed.model,
        messages: parsed.messages,
        schemaName: parsed.response_format?.json_schema?.name,
      };
      const answer = options.chat?.(request) ?? { text: "ok" };
      return {
        id: `chatcmpl-${crypto.randomUUID()}`,
        object: "chat.completion",
        created: Math.floor(Date.now() / 1000),
        model: parsed.model,
        choices: [{
          index: 0,
          message: { role: "assistant", content: JSON.stringify(answer) },
          finish_reason: "stop",
        }],
        usage: { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens },
      };
    }
    return { error: { message: `no fake for ${path}` } };
  });
  return Object.assign(server, {
    baseUrl: `${server.url}/v1`,
    chatCalls: () => server.count("/v1/chat/completions"),
    transcriptionCalls: () => server.count("/v1/audio/transcriptions"),
  });
}
