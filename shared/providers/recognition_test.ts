import { assertEquals } from "../../scripts/testing/assert.ts";
import { startACRCloudFake } from "../../scripts/testing/fakes/acrcloud.ts";
import { startShazamFake } from "../../scripts/testing/fakes/shazam.ts";
import { acrcloudIdentify, acrcloudStringToSign } from "./acrcloud.ts";
import { RecognitionError } from "./recognition.ts";
import { shazamDetect } from "./shazam.ts";

const audio = new TextEncoder().encode("RIFF KNOWN sample");
const signal = () => AbortSignal.timeout(5000);

Deno.test("ACRCloud: signs the request (the fake verifies it), parses metadata.music", async () => {
  assertEquals(
    acrcloudStringToSign("k", "1700000000"),
    "POST\n/v1/identify\nk\naudio\n1\n1700000000",
  );
  const fake = startACRCloudFake({
    identify: (s) =>
      s.includes("KNOWN")
        ? [{
          title: "Glass Anthem",
          artist: "The Owls",
          album: "Mirrors",
          release_date: "2004-05-01",
          score: 87,
        }]
        : [],
  });
  const config = { host: fake.baseUrl, accessKey: fake.accessKey, accessSecret: fake.accessSecret };
  assertEquals(await acrcloudIdentify(config, audio, signal()), [
    { title: "Glass Anthem", artist: "The Owls", album: "Mirrors", year: 2004, score: 0.87 },
  ]);
  assertEquals(await acrcloudIdentify(config, new Uint8Array([1]), signal()), []);
  assertEquals(fake.badSignatures, 0);
  // A wrong secret: the service refuses the signature (a 4xx-like error, not the API's fault).
  const wrong = await acrcloudIdentify({ ...config, accessSecret: "nope" }, audio, signal())
    .catch((e) => e);
  assertEquals([wrong instanceof RecognitionError, wrong.status], [true, 400]);
  assertEquals(fake.badSignatures, 1);
  fake.behave({ status: 503 });
  assertEquals((await acrcloudIdentify(config, audio, signal()).catch((e) => e)).status, 503);
  fake.behave({ malformed: true });
  assertEquals((await acrcloudIdentify(config, audio, signal()).catch((e) => e)).status, 502);
  await fake.close();
});

Deno.test("Shazam: base64 body with the RapidAPI key, parses track title/subtitle", async () => {
  const fake = startShazamFake({
    detect: (a) =>
      a.includes("KNOWN")
        ? { title: "Honey Signal", artist: "Ivy Sato", album: "Avenue", released: "1987" }
        : null,
  });
  const config = { apiKey: fake.apiKey, baseUrl: fake.baseUrl };
  assertEquals(await shazamDetect(config, audio, signal()), [
    { title: "Honey Signal", artist: "Ivy Sato", album: "Avenue", year: 1987, score: 0.9 },
  ]);
  assertEquals(await shazamDetect(config, new Uint8Array([0, 255]), signal()), []);
  assertEquals(fake.badKeys, 0);
  fake.behave({ status: 429, headers: { "retry-after": "2" } });
  const limited = await shazamDetect(config, audio, signal()).catch((e) => e);
  assertEquals([limited.status, limited.headers.get("retry-after")], [429, "2"]);
  assertEquals(fake.detectCalls(), 3);
  await fake.close();
});
