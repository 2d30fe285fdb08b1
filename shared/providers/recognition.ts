/**
 * What an audio recognition service (ACRCloud, Shazam) tells us about a recording, in one
 * shape, and the error its clients throw so breakers and endpoints can judge the outcome.
 *
 * @module
 */

/** One song a recognizer heard. */
export interface RecognizedSong {
  title: string;
  artist: string;
  album?: string;
  year?: number;
  /** The service's own certainty, 0..1. */
  score: number;
}

/**
 * A recognizer's failure. `status` follows HTTP (429 for quota, 5xx for their trouble, other
 * 4xx for our mistakes), so the circuit breaker classifies it like any upstream answer.
 */
export class RecognitionError extends Error {
  override name = "RecognitionError";
  constructor(
    readonly provider: string,
    readonly status: number,
    message: string,
    readonly headers?: Headers,
  ) {
    super(`${provider}: ${message}`);
  }
}

/** A year from "1998", "1998-04-01" or "Released 1998"; undefined when there is none. */
export function yearOf(text: unknown): number | undefined {
  const match = typeof text === "string" ? text.match(/\b(1[89]\d\d|2[01]\d\d)\b/) : null;
  return match ? Number(match[1]) : undefined;
}

/** Parses a provider's JSON body, turning garbage into a failure the breaker counts. */
export async function readJson(provider: string, res: Response): Promise<unknown> {
  const text = await res.text();
  if (!res.ok) {
    throw new RecognitionError(provider, res.status, `HTTP ${res.status}`, res.headers);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new RecognitionError(provider, 502, "the answer is not JSON");
  }
}
