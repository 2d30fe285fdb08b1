/**
 * Shared field schemas: text must be well-formed Unicode without control characters, and ids
 * are canonical.
 */
import { assert, assertEquals } from "../../scripts/testing/assert.ts";
import { plainText, uuid } from "./schemas.ts";

Deno.test("plainText: a lone surrogate is refused, saying why; a surrogate pair is fine", () => {
  for (const bad of ["\ud800", "a\udfffb", "end \ud83d", "\udc00\ud800"]) {
    const result = plainText().safeParse(bad);
    assert(!result.success, JSON.stringify(bad));
    assert(result.error.issues[0].message.includes("well-formed"), result.error.message);
  }
  for (const good of ["", "plain", "emoji \ud83c\udfb8 ok", "tab\tand\nnewline", "é ü 日本"]) {
    assertEquals(plainText().safeParse(good).success, true, JSON.stringify(good));
  }
  assertEquals(plainText().safeParse("nul \u0000").success, false);
});

Deno.test("uuid: canonical lowercase", () => {
  assertEquals(
    uuid().parse("0E3C9A5E-4F8B-4C6B-9D3A-1B2C3D4E5F60"),
    "0e3c9a5e-4f8b-4c6b-9d3a-1b2c3d4e5f60",
  );
});
