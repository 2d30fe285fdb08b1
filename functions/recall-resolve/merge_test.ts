import { assert, assertEquals } from "../../scripts/testing/assert.ts";
import { combineConfidence, mergeCandidates, songKey } from "./merge.ts";

Deno.test("songKey ignores case, accents, punctuation, 'the', remarks and featured artists", () => {
  assertEquals(
    songKey("Café del Mar (Remastered 2011)", "The Rusty Amps feat. Ada Vance"),
    songKey("cafe del mar", "Rusty Amps"),
  );
  assert(songKey("Paper Harbor", "June Byrne") !== songKey("Paper Harbor", "Otis Byrne"));
});

Deno.test("confidences combine as independent evidence, capped at 1", () => {
  assertEquals(combineConfidence([0.6, 0.6]), 0.84);
  assertEquals(combineConfidence([1, 0.3]), 1);
  assertEquals(combineConfidence([0.5]), 0.5);
});

Deno.test("merge dedupes, lists sources once, keeps the catalog's id and spelling, sorts", () => {
  const merged = mergeCandidates([
    {
      title: "midnight velvet echo",
      artist: "rusty amps",
      confidence: 0.6,
      source: "candidates",
      reason: "line",
    },
    {
      title: "Midnight Velvet Echo",
      artist: "The Rusty Amps",
      confidence: 0.7,
      source: "catalog",
      song_id: "s1",
      year: 1998,
    },
    {
      title: "Midnight Velvet Echo",
      artist: "The Rusty Amps",
      confidence: 0.65,
      source: "catalog",
    },
    { title: "Paper Harbor", artist: "June Byrne", confidence: 0.8, source: "shazam" },
    { title: "", artist: "nobody", confidence: 1, source: "candidates" },
  ]);
  assertEquals(merged.map((c) => c.title), ["Midnight Velvet Echo", "Paper Harbor"]);
  assertEquals(merged[0], {
    title: "Midnight Velvet Echo",
    artist: "The Rusty Amps",
    confidence: 0.88,
    sources: ["candidates", "catalog"],
    year: 1998,
    song_id: "s1",
    reason: "line",
  });
  assertEquals(merged[1].sources, ["shazam"]);
});
