/**
 * The OpenAI fake as a process of its own, for load tests and benchmarks of a running stack:
 * `deno run -A scripts/testing/fakes/serve_openai.ts` (PORT, FAKE_LATENCY_MS default 300). Prints its
 * base URL (for OPENAI_BASE_URL).
 *
 * @module
 */
import { startOpenAIFake } from "./openai.ts";

const fake = startOpenAIFake({
  chat: (req) => ({
    // Whatever schema was asked for, a plausible answer shape.
    candidates: [{
      title: "Invented Song",
      artist: "Made Up Band",
      album: null,
      year: null,
      confidence: 0.55,
      reason: "fake",
    }],
    lyrics_fragment: null,
    title_hint: null,
    artist_hint: null,
    description: req.messages.at(-1)?.content?.slice(0, 80) ?? "",
    era: null,
    summary: "A lively thread (fake model).",
    text: "A reply from a persona (fake model).",
  }),
}, Number(Deno.env.get("PORT") ?? 0));
fake.behave({ delayMs: Number(Deno.env.get("FAKE_LATENCY_MS") ?? 300) });
console.log(fake.baseUrl);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, async () => {
    await fake.close();
    Deno.exit(0);
  });
}
