import "../scripts/unit_env.ts";
Deno.env.set("MAX_IN_FLIGHT", "2");
import { assertEquals, assertMatch } from "../scripts/assert.ts";
import { it } from "../scripts/test_http.ts";

const { createApp } = await import("./http.ts");
const { toProblem } = await import("./problem.ts");

it("past MAX_IN_FLIGHT concurrent requests an isolate answers 503 at once, then recovers", async () => {
  const app = createApp("t");
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  app.get("/block", async (c) => {
    await gate;
    return c.text("ok");
  });
  const held = [app.request("/t/block"), app.request("/t/block")];
  const refused = await app.request("/t/block");
  assertEquals(refused.status, 503);
  assertEquals(refused.headers.get("retry-after"), "1");
  assertEquals(refused.headers.get("content-type"), "application/problem+json");
  release();
  assertEquals((await Promise.all(held)).map((r) => r.status), [200, 200]);
  assertEquals((await app.request("/t/block")).status, 200);
});

it("overload and dependency failures map to 503/504, anything else to an opaque 500", () => {
  assertEquals(
    toProblem(Object.assign(new Error("canceling statement"), { code: "57014" })).status,
    504,
  );
  assertEquals(
    toProblem(Object.assign(new Error("closed"), { code: "CONNECTION_CLOSED" })).status,
    503,
  );
  assertEquals(
    toProblem(new DOMException("The operation was aborted due to timeout", "TimeoutError")).status,
    504,
  );
  const nul = Object.assign(new Error('invalid byte sequence for encoding "UTF8": 0x00'), {
    code: "22021",
  });
  assertEquals(toProblem(nul).status, 400);
  const internal = toProblem(new TypeError("x is undefined"));
  assertEquals(internal.status, 500);
  assertMatch(internal.detail, /^an unexpected error occurred$/);
});
