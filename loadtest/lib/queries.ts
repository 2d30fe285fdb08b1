/**
 * What users type into Recall: a small pool of made-up song descriptions and lyric
 * fragments, so some queries repeat (as trending ones do) and most don't.
 *
 * @module
 */
const moods = ["sad", "upbeat", "dreamy", "angry", "slow", "dancey", "acoustic", "synth-heavy"];
const things = [
  "rain",
  "highway",
  "neon lights",
  "summer",
  "heartbreak",
  "the ocean",
  "midnight",
  "a train",
];
const eras = ["80s", "90s", "2000s", "2010s", "last year"];

/** The `i`-th query of the pool (`size` distinct ones). */
export function recallQuery(i: number, size = 400): string {
  const n = i % size;
  return `${moods[n % moods.length]} song about ${
    things[Math.floor(n / moods.length) % things.length]
  } from the ${eras[Math.floor(n / (moods.length * things.length)) % eras.length]}`;
}
