import { assertEquals } from "../../scripts/testing/assert.ts";
import { PoolGate } from "./pool_gate.ts";

Deno.test("PoolGate: FIFO, a full lane lets others pass, an aborted wait leaves the queue", async () => {
  const gate = new PoolGate(2, { search: 1 });
  const s1 = await gate.acquire("search");
  const order: string[] = [];
  const s2 = gate.acquire("search").then((r) => (order.push("search"), r));
  const d1 = await gate.acquire("default"); // passes the waiting search: its lane is full
  assertEquals(gate.inUse, { total: 2, search: 1 });
  const controller = new AbortController();
  const abandoned = gate.acquire("default", controller.signal);
  const d2 = gate.acquire("default").then((r) => (order.push("default"), r));
  assertEquals(gate.waiting, 3);
  controller.abort(new DOMException("budget", "TimeoutError"));
  const err = await abandoned.catch((e) => e);
  assertEquals(err.name, "TimeoutError");
  assertEquals(gate.waiting, 2);
  s1(); // frees a search slot: the search waiter is first in line and may use it
  const r2 = await s2;
  d1();
  const r3 = await d2;
  assertEquals(order, ["search", "default"]);
  r2();
  r3();
  s1(); // idempotent
  assertEquals(gate.inUse, { total: 0, search: 0 });
});
