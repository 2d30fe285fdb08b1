/**
 * One more serving process of the local gateway, sharing the port with `scripts/dev/start.ts`
 * (SO_REUSEPORT): how `npm start` uses more than one core (WORKERS), the way Supabase runs
 * more isolates. Expects the environment `start.ts` prepared.
 *
 * @module
 */
import { createDeps } from "../../shared/deps.ts";
import { createGateway } from "./gateway.ts";

const env = Deno.env.toObject();
const deps = createDeps(env);
const gateway = await createGateway({
  deps,
  jwks: JSON.parse(env.SUPABASE_JWKS ?? '{"keys":[]}'),
});
const server = Deno.serve({
  hostname: "127.0.0.1",
  port: Number(env.PORT),
  reusePort: true,
  onListen: () => console.log("ready"),
}, gateway.fetch);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => server.shutdown());
}
await server.finished;
await deps.close();
Deno.exit(0); // timers (caches, breakers) would otherwise keep the process alive a while
