/**
 * A local stand-in for ACRCloud's identify API (`POST /v1/identify`), reached through
 * `ACRCLOUD_HOST=<baseUrl>`. It checks the HMAC-SHA1 signature like the real service (code
 * 3014 when wrong), lets the test decide what it "hears", and can be slow, failing, hanging
 * or malformed (FakeServer.behave). `identify` may return a promise: tests hold calls open
 * that way (a latch they release).
 *
 * @module
 */
import { type FakeServer, startFakeServer } from "../fake_http.ts";
import { acrcloudSignature, acrcloudStringToSign } from "../../../shared/providers/acrcloud.ts";

/** A song the fake recognizes (ACRCloud's `metadata.music[]` item, simplified). */
export interface FakeACRSong {
  title: string;
  artist: string;
  album?: string;
  release_date?: string;
  score?: number;
}

/** The fake, plus its credentials and counters. */
export interface ACRCloudFake extends FakeServer {
  /** `ACRCLOUD_HOST` for the code under test. */
  baseUrl: string;
  accessKey: string;
  accessSecret: string;
  identifyCalls(): number;
  /** Calls whose signature did not verify. */
  badSignatures: number;
}

/**
 * Starts the fake. `identify` gets the sample's bytes (as the fake received them: text-decoded,
 * so compare lengths or ASCII markers) and returns the songs heard (empty: "No result").
 */
export function startACRCloudFake(options: {
  identify?: (sample: string) => FakeACRSong[] | Promise<FakeACRSong[]>;
  accessKey?: string;
  accessSecret?: string;
} = {}): ACRCloudFake {
  const accessKey = options.accessKey ?? "fake-acr-key";
  const accessSecret = options.accessSecret ?? "fake-acr-secret";
  const server = startFakeServer(async (req, body) => {
    const form = await new Response(body, {
      headers: { "content-type": req.headers.get("content-type") ?? "" },
    }).formData().catch(() => null);
    const field = (name: string) => String(form?.get(name) ?? "");
    const expected = await acrcloudSignature(
      accessSecret,
      acrcloudStringToSign(field("access_key"), field("timestamp")),
    );
    if (
      !form || field("access_key") !== accessKey || field("signature") !== expected ||
      field("data_type") !== "audio" || field("signature_version") !== "1"
    ) {
      fake.badSignatures++;
      return { status: { msg: "invalid signature", code: 3014, version: "1.0" } };
    }
    const sample = form.get("sample");
    const text = sample instanceof File ? await sample.text() : String(sample ?? "");
    const songs = await (options.identify?.(text) ?? []);
    if (!songs.length) return { status: { msg: "No result", code: 1001, version: "1.0" } };
    return {
      status: { msg: "Success", code: 0, version: "1.0" },
      metadata: {
        music: songs.map((s) => ({
          title: s.title,
          artists: [{ name: s.artist }],
          album: s.album ? { name: s.album } : undefined,
          release_date: s.release_date,
          score: s.score ?? 100,
        })),
      },
      result_type: 0,
    };
  });
  const fake: ACRCloudFake = Object.assign(server, {
    baseUrl: server.url,
    accessKey,
    accessSecret,
    identifyCalls: () => server.count("/v1/identify"),
    badSignatures: 0,
  });
  return fake;
}
