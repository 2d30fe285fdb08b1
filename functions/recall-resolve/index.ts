import { requireRedis } from "../../shared/redis.ts";
import { app } from "./app.ts";

// Every limit, lease, breaker and cache runs in Redis: refuse to boot without it, naming
// UPSTASH_REDIS_REST_URL, rather than fail at the first request.
requireRedis();
Deno.serve(app.fetch);
