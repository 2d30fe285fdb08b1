/**
 * One more serving process of the local gateway, sharing the port with `scripts/dev/start.ts`
 * (SO_REUSEPORT): how `npm start` uses more than one core (WORKERS), the way Supabase runs
 * more isolates. Expects the environment `start.ts` prepared.
 *
 * @module
 */
import { createGateway } from "./gateway.ts";

const gateway = await createGateway({
  jwks: JSON.parse(Deno.env.get("SUPABASE_JWKS") ?? '{"keys":[]}'),
});
const server = Deno.serve({
  hostname: "127.0.0.1",
  port: Number(Deno.env.get("PORT")),
  reusePort: true,
  onListen: () => console.log("ready"),
}, gateway.fetch);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => server.shutdown());
}
await server.finished;
Deno.exit(0); // module-scope pools and timers would otherwise keep the process alive
