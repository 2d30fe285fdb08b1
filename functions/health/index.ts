import { createDeps } from "../../shared/deps.ts";
import { createApp } from "./app.ts";

const env = Deno.env.toObject();
// Built once per isolate from its environment: a bad or missing variable (Redis, keys,
// this function's own settings) fails here, naming it. Locally (`deno run -A` this file) it
// listens on PORT (default 8000); the Edge Runtime ignores the port.
Deno.serve(
  { port: env.PORT ? Number(env.PORT) : 8000 },
  createApp(createDeps(env)).fetch,
);
