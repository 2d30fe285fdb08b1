import { assertEquals } from "../assert.ts";
import { startOpenAIFake } from "./openai.ts";
import OpenAI from "openai";

Deno.test("the OpenAI fake answers the SDK's chat and transcription calls and counts them", async () => {
  const fake = startOpenAIFake({
    chat: (req) => ({ schema: req.schemaName, model: req.model }),
    transcribe: () => "la la la",
  });
  const client = new OpenAI({ apiKey: "test", baseURL: fake.baseUrl, maxRetries: 0 });
  const completion = await client.chat.completions.create({
    model: "small",
    messages: [{ role: "user", content: "hi" }],
    response_format: {
      type: "json_schema",
      json_schema: { name: "intent", schema: { type: "object" } },
    },
  });
  assertEquals(JSON.parse(completion.choices[0].message.content!), {
    schema: "intent",
    model: "small",
  });
  assertEquals(completion.usage?.total_tokens, 160);
  const text = await client.audio.transcriptions.create({
    file: new File([new Uint8Array([1, 2, 3])], "a.webm", { type: "audio/webm" }),
    model: "whisper",
  });
  assertEquals(text.text, "la la la");
  fake.behave({ status: 503 }, "/v1/chat");
  const failed = await client.chat.completions.create({ model: "m", messages: [] }).catch((e) => e);
  assertEquals(failed.status, 503);
  assertEquals([fake.chatCalls(), fake.transcriptionCalls()], [2, 1]);
  await fake.close();
});
