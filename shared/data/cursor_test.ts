import { assertEquals, assertMatch } from "../../scripts/testing/assert.ts";
import { decodeCursor, encodeCursor, keyFormats } from "./cursor.ts";

const id = "00000000-0000-4000-8000-000000000001";

Deno.test("round-trips the exact key text", () => {
  const key = "2026-11-25 10:00:00.123456+00";
  const cursor = encodeCursor("following", key, id);
  assertMatch(cursor, /^[A-Za-z0-9_-]+$/);
  assertEquals(decodeCursor(cursor, "following", keyFormats.timestamptz), { key, id });
  assertEquals(
    decodeCursor(encodeCursor("for-you", "39905.0588110867", id), "for-you", keyFormats.float8),
    { key: "39905.0588110867", id },
  );
});

Deno.test("refuses garbage, foreign and tampered cursors with a 400 naming cursor", () => {
  const bad = [
    "%%%",
    "",
    encodeCursor("for-you", "1.5", id), // another list's
    encodeCursor("following", "yesterday", id),
    encodeCursor("following", "2026-11-25 10:00:00+00", "not-a-uuid"),
    encodeCursor("following", "2026-11-25 10:00:00+00", id).slice(0, -3),
  ];
  for (const cursor of bad) {
    try {
      decodeCursor(cursor, "following", keyFormats.timestamptz);
      throw new Error(`accepted ${cursor}`);
    } catch (err) {
      const problem = err as {
        status: number;
        options: { extensions: { invalid_params: { name: string }[] } };
      };
      assertEquals(problem.status, 400);
      assertEquals(problem.options.extensions.invalid_params[0].name, "cursor");
    }
  }
});
