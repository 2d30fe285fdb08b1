import { assertEquals } from "../../scripts/testing/assert.ts";
import { encodeCursor, keyFormats } from "./cursor.ts";
import { pageArgs, toPage } from "./keyset.ts";

const ks = { tag: "things", key: keyFormats.timestamptz };
const id = (n: number) => `00000000-0000-4000-8000-00000000000${n}`;
const rows = [1, 2, 3].map((n) => ({ id: id(n), cursor_key: `2026-11-25 10:00:0${n}+00` }));

Deno.test("pageArgs fetches one row more than the page and decodes the cursor", () => {
  assertEquals(pageArgs(ks, 2), { limit: 2, fetch: 3, after: null });
  const cursor = encodeCursor("things", rows[0].cursor_key, id(1));
  assertEquals(pageArgs(ks, 2, cursor).after, { key: rows[0].cursor_key, id: id(1) });
});

Deno.test("pageArgs refuses another list's cursor with a 400 naming cursor", () => {
  const foreign = encodeCursor("others", rows[0].cursor_key, id(1));
  try {
    pageArgs(ks, 2, foreign);
    throw new Error("accepted a foreign cursor");
  } catch (err) {
    const problem = err as {
      status: number;
      options: { extensions: { invalid_params: { name: string }[] } };
    };
    assertEquals(problem.status, 400);
    assertEquals(problem.options.extensions.invalid_params[0].name, "cursor");
  }
});

Deno.test("toPage cuts the page and points the cursor at its last row when more follow", () => {
  const p = pageArgs(ks, 2);
  const page = toPage(ks, p, rows, (r) => r.id);
  assertEquals(page.items, [id(1), id(2)]);
  assertEquals(page.next_cursor, encodeCursor("things", rows[1].cursor_key, id(2)));
  const next = pageArgs(ks, 2, page.next_cursor!);
  assertEquals(next.after, { key: rows[1].cursor_key, id: id(2) });
});

Deno.test("toPage has no cursor on the last page", () => {
  assertEquals(toPage(ks, pageArgs(ks, 3), rows, (r) => r.id).next_cursor, null);
  assertEquals(toPage(ks, pageArgs(ks, 5), [], (r) => r).items, []);
});
