/**
 * The cold-start floor (scripts/bench/cold_start.ts): a bare `Deno.serve` hello world on PORT,
 * spawned exactly as a function is.
 *
 * @module
 */
Deno.serve({ port: Number(Deno.env.get("PORT") ?? 8000) }, () => new Response("hello"));
