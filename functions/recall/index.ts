import { createDeps } from "../../shared/deps.ts";
import { createApp } from "./app.ts";

// Built once per isolate from its environment: a bad or missing variable (Redis, keys,
// this function's own settings) fails here, naming it.
Deno.serve(createApp(createDeps(Deno.env.toObject())).fetch);
