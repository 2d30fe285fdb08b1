/**
 * Merging what the providers proposed into one ranked list: candidates naming the same song
 * (same normalized title and artist) become one, their confidences combined, their sources
 * listed; the catalog's song id is attached when known.
 *
 * @module
 */

/** Where a candidate came from: `catalog`, `intent`, `candidates`, `acrcloud`, `shazam`. */
export type Source = string;

/** One provider's proposal. */
export interface Proposal {
  title: string;
  artist: string;
  album?: string | null;
  year?: number | null;
  /** 0..1 */
  confidence: number;
  source: Source;
  song_id?: string;
  reason?: string | null;
}

/** A merged candidate, as the API answers it. */
export interface Candidate {
  title: string;
  artist: string;
  album?: string;
  year?: number;
  confidence: number;
  sources: Source[];
  song_id?: string;
  reason?: string;
}

/** Most candidates in one answer. */
export const maxCandidates = 10;

/**
 * The identity of a song for deduplication: case, accents, punctuation, a leading "the",
 * bracketed remarks ("(Remastered 2011)") and "feat. …" do not make another song.
 */
export function songKey(title: string, artist: string): string {
  const norm = (s: string) =>
    s.normalize("NFKD").replace(/\p{M}/gu, "").toLowerCase()
      .replace(/\s*[([].*?[)\]]/g, " ")
      .replace(/\s+(feat\.?|ft\.?|featuring)\s.*$/, " ")
      .replace(/[^\p{L}\p{N}]+/gu, " ")
      .trim()
      .replace(/^the\s+/, "");
  return `${norm(title)}\u0000${norm(artist)}`;
}

/** Independent evidence: 1 − Π(1 − cᵢ) (two sources at 0.6 make 0.84, never above 1). */
export function combineConfidence(values: number[]): number {
  const miss = values.reduce((p, c) => p * (1 - Math.max(0, Math.min(1, c))), 1);
  return Math.round((1 - miss) * 1000) / 1000;
}

/**
 * Dedupes `proposals` by {@link songKey}, combines confidences (a source counts once per
 * song: its best proposal), keeps the first known album, year, reason and song id (the
 * catalog's spelling of title and artist wins), and sorts by confidence, then by how many
 * sources agree, then by title.
 */
export function mergeCandidates(proposals: Proposal[]): Candidate[] {
  const groups = new Map<string, Proposal[]>();
  for (const p of proposals) {
    if (!p.title?.trim() || !p.artist?.trim()) continue;
    const key = songKey(p.title, p.artist);
    const group = groups.get(key);
    if (group) group.push(p);
    else groups.set(key, [p]);
  }
  const merged: Candidate[] = [];
  for (const group of groups.values()) {
    const best = new Map<Source, number>();
    for (const p of group) best.set(p.source, Math.max(best.get(p.source) ?? 0, p.confidence));
    const lead = group.find((p) => p.song_id) ?? group[0];
    const candidate: Candidate = {
      title: lead.title.trim(),
      artist: lead.artist.trim(),
      confidence: combineConfidence([...best.values()]),
      sources: [...best.keys()].sort(),
    };
    const album = group.find((p) => p.album)?.album;
    if (album) candidate.album = album;
    const year = group.find((p) => p.year)?.year;
    if (year) candidate.year = year;
    if (lead.song_id) candidate.song_id = lead.song_id;
    const reason = group.find((p) => p.reason)?.reason;
    if (reason) candidate.reason = reason;
    merged.push(candidate);
  }
  merged.sort((a, b) =>
    b.confidence - a.confidence || b.sources.length - a.sources.length ||
    a.title.localeCompare(b.title)
  );
  return merged.slice(0, maxCandidates);
}
