/**
 * A local stand-in for Shazam's RapidAPI `POST /songs/v2/detect`, reached through
 * `SHAZAM_BASE_URL=<baseUrl>`. It checks `X-RapidAPI-Key` (a wrong key finds nothing and is
 * counted in `badKeys`), decodes the base64 body, lets the test decide what it "hears", and can be slow, failing,
 * hanging or malformed (FakeServer.behave).
 *
 * @module
 */
import { type FakeServer, startFakeServer } from "../fake_http.ts";

/** A song the fake detects. */
export interface FakeShazamSong {
  title: string;
  artist: string;
  album?: string;
  released?: string;
}

/** The fake, plus its key and counters. */
export interface ShazamFake extends FakeServer {
  /** `SHAZAM_BASE_URL` for the code under test. */
  baseUrl: string;
  apiKey: string;
  detectCalls(): number;
  /** Calls with a missing or wrong key. */
  badKeys: number;
}

/**
 * Starts the fake. `detect` gets the decoded audio (bytes as a latin-1 string, so ASCII
 * markers read as written) and returns the song heard, or null for no match. It may return a
 * promise: tests hold calls open that way (a latch they release).
 */
export function startShazamFake(options: {
  detect?: (audio: string) => FakeShazamSong | null | Promise<FakeShazamSong | null>;
  apiKey?: string;
} = {}): ShazamFake {
  const apiKey = options.apiKey ?? "fake-shazam-key";
  const server = startFakeServer(async (req, body) => {
    if (req.headers.get("x-rapidapi-key") !== apiKey) {
      fake.badKeys++;
      return { matches: [] };
    }
    let audio: string;
    try {
      audio = atob(body.trim());
    } catch {
      return { matches: [], error: "body is not base64" };
    }
    const song = await (options.detect?.(audio) ?? null);
    if (!song) return { matches: [], timestamp: Date.now(), tagid: crypto.randomUUID() };
    return {
      matches: [{ id: "1", offset: 1.2, timeskew: 0, frequencyskew: 0 }],
      timestamp: Date.now(),
      tagid: crypto.randomUUID(),
      track: {
        key: "1",
        title: song.title,
        subtitle: song.artist,
        sections: [{
          type: "SONG",
          metadata: [
            ...(song.album ? [{ title: "Album", text: song.album }] : []),
            ...(song.released ? [{ title: "Released", text: song.released }] : []),
          ],
        }],
      },
    };
  });
  const fake: ShazamFake = Object.assign(server, {
    baseUrl: server.url,
    apiKey,
    detectCalls: () => server.count("/songs/v2/detect"),
    badKeys: 0,
  });
  return fake;
}
