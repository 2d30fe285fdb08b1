/**
 * Deterministic synthetic data at any scale.
 *
 *   npm run seed -- --users 10000 --posts 200000 [--follows 20] [--likes 3] [--seed 42] [--songs 2000]
 *
 * DATABASE_URL defaults to the running `npm start`'s database.
 *
 * Same options → same ids, usernames, display names, bodies, follow and like
 * graphs (fixed-seed PRNG). Timestamps are spread over the 30 days before now.
 * User 0 is the demo user (DEMO_USER_ID, username `demo`), who follows ~50
 * people. Follows and likes are Zipf-skewed (a few popular users/posts get
 * most of them). Rows go in with COPY inside one transaction; like_count is
 * made exact by the likes triggers (one grouped UPDATE per COPY).
 */
import postgres from "postgres";

export const DEMO_USER_ID = "00000000-0000-4000-8000-000000000001";
export const DEMO_USERNAME = "demo";
export const DEMO_EMAIL = "demo@rockout.local";

export interface SeedOptions {
  users: number;
  posts: number;
  /** Average follows per user (default 20). */
  follows?: number;
  /** Average likes per post (default 3). */
  likes?: number;
  /** PRNG seed (default 42). */
  seed?: number;
  /** Synthetic recall catalog songs (default 2000). */
  songs?: number;
}

export interface SeedResult {
  users: number;
  posts: number;
  follows: number;
  likes: number;
  songs: number;
  ms: number;
}

const DAY_US = 86_400_000_000;
const SPAN_US = 30 * DAY_US;
const DEMO_FOLLOWS = 50;

/** mulberry32: small, fast, good enough for synthetic data. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** 32-bit integer hash (lowbias32). */
function hash32(x: number): number {
  x = x >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

const hex8 = (n: number) => n.toString(16).padStart(8, "0");

/** The id of seeded user `index` (0 is the demo user), as `seed()` makes it. */
export function seededUserId(index: number, seed = 42): string {
  return index === 0 ? DEMO_USER_ID : seededUuid(1, index, seed);
}

/** A deterministic, random-looking v4-format uuid for (kind, index, seed). */
export function seededUuid(kind: number, index: number, seed: number): string {
  let h = hash32(seed ^ hash32(kind * 0x9e3779b1 + 1));
  h = hash32(h ^ hash32(index));
  const w0 = h;
  const w1 = hash32(w0 ^ 0x85ebca6b);
  const w2 = hash32(w1 ^ 0xc2b2ae35);
  const w3 = hash32(w2 ^ 0x27d4eb2f);
  const a = hex8(w0);
  const b = hex8(w1);
  const c = hex8(((w2 & 0xbfffffff) | 0x80000000) >>> 0); // variant 10xx
  const d = hex8(w3);
  // xxxxxxxx-xxxx-4xxx-Vxxx-xxxxxxxxxxxx
  return `${a}-${b.slice(0, 4)}-4${b.slice(5, 8)}-${c.slice(0, 4)}-${c.slice(4)}${d}`;
}

const ADJECTIVES = [
  "Electric",
  "Velvet",
  "Midnight",
  "Neon",
  "Acoustic",
  "Golden",
  "Wild",
  "Silent",
  "Cosmic",
  "Rusty",
  "Lunar",
  "Crimson",
  "Funky",
  "Lo-fi",
  "Analog",
  "Stormy",
];
const NOUNS = [
  "Drummer",
  "Riff",
  "Echo",
  "Groove",
  "Bassline",
  "Vinyl",
  "Chorus",
  "Synth",
  "Ballad",
  "Amp",
  "Tempo",
  "Encore",
  "Mixtape",
  "Falsetto",
  "Backbeat",
  "Hook",
];
const OPENERS = [
  "Just heard",
  "Can't stop playing",
  "Throwback to",
  "Live recording of",
  "Working on",
  "Who else loves",
  "Tonight's soundtrack:",
  "First listen:",
  "On repeat:",
  "Cover of",
];
const SUBJECTS = [
  "that bridge in the second verse",
  "a basement show last night",
  "the new album",
  "an old B-side",
  "my band's demo",
  "a 7-minute guitar solo",
  "the drum fill at 2:14",
  "a rainy-day playlist",
  "this synth patch",
  "the encore",
  "a vinyl I found for $2",
  "the festival lineup",
];
const CLOSERS = [
  "",
  " 🔥",
  " — thoughts?",
  " #rockout",
  " #nowplaying",
  " Goosebumps every time.",
  " Turn it up.",
  " Who's coming next week?",
];

/** Cumulative Zipf weights 1/(r+1)^s for ranks 0..n-1. */
function zipfTable(n: number, s: number): Float64Array {
  const cdf = new Float64Array(n);
  let acc = 0;
  for (let r = 0; r < n; r++) {
    acc += 1 / Math.pow(r + 1, s);
    cdf[r] = acc;
  }
  return cdf;
}

function sampleCdf(cdf: Float64Array, u: number): number {
  const target = u * cdf[cdf.length - 1];
  let lo = 0;
  let hi = cdf.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cdf[mid] < target) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Deterministic Fisher–Yates permutation of 0..n-1. */
function permutation(n: number, rand: () => number): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}

/** Timestamp text with microseconds for an epoch-microsecond value. */
function tsText(us: number): string {
  const ms = Math.floor(us / 1000);
  const rest = Math.floor(us - ms * 1000);
  return new Date(ms).toISOString().replace("Z", `${String(rest).padStart(3, "0")}Z`);
}

/** COPY text-format escaping (\N for null). */
function cp(v: string | null): string {
  if (v === null) return "\\N";
  return v.replace(/\\/g, "\\\\").replace(/\t/g, "\\t").replace(/\n/g, "\\n").replace(
    /\r/g,
    "\\r",
  );
}

/** Streams rows into `copy <target> from stdin` with backpressure. */
async function copyRows(
  tx: postgres.TransactionSql,
  target: string,
  count: number,
  row: (i: number) => string | null,
): Promise<number> {
  const stream = await tx.unsafe(`copy ${target} from stdin`).writable();
  const done = new Promise<void>((resolve, reject) => {
    stream.on("finish", resolve);
    stream.on("error", reject);
  });
  let buf = "";
  let written = 0;
  for (let i = 0; i < count; i++) {
    const line = row(i);
    if (line === null) continue;
    buf += line + "\n";
    written++;
    if (buf.length > 1 << 20) {
      if (!stream.write(buf)) await new Promise((r) => stream.once("drain", r));
      buf = "";
    }
  }
  if (buf) stream.write(buf);
  stream.end();
  await done;
  return written;
}

/** True when there are no profiles yet (fresh database). */
export async function isEmpty(sql: postgres.Sql): Promise<boolean> {
  const [row] = await sql`select not exists (select 1 from public.profiles) as empty`;
  return row.empty as boolean;
}

/** Plans the data set in memory (pure, deterministic apart from `nowUs`). */
export function plan(opts: SeedOptions, nowUs = Date.now() * 1000) {
  const users = Math.max(1, Math.floor(opts.users));
  const posts = Math.max(0, Math.floor(opts.posts));
  const avgFollows = opts.follows ?? 20;
  const avgLikes = opts.likes ?? 3;
  const seed = (opts.seed ?? 42) >>> 0;
  const rand = mulberry32(seed);

  // Users: 0 is demo. Join times spread over the span (before their posts).
  const userIds: string[] = new Array(users);
  const usernames: string[] = new Array(users);
  const displayNames: string[] = new Array(users);
  for (let i = 0; i < users; i++) {
    userIds[i] = i === 0 ? DEMO_USER_ID : seededUuid(1, i, seed);
    usernames[i] = i === 0 ? DEMO_USERNAME : `user_${String(i).padStart(6, "0")}`;
    displayNames[i] = i === 0
      ? "Demo Rocker"
      : `${ADJECTIVES[Math.floor(rand() * ADJECTIVES.length)]} ${
        NOUNS[Math.floor(rand() * NOUNS.length)]
      }`;
  }
  const userCreatedUs = nowUs - SPAN_US - DAY_US;

  // Popularity: a Zipf rank over a shuffled order, mixed with uniform picks.
  const popPerm = permutation(users, rand);
  const popCdf = zipfTable(users, 1.0);
  const pickPopular = () =>
    rand() < 0.5 ? popPerm[sampleCdf(popCdf, rand())] : Math.floor(rand() * users);

  // Follows: per user ~Uniform(0, 2*avg) distinct followees; demo follows 50.
  const followPairs: number[] = []; // flattened [follower, followee, ...]
  const followSeen = new Set<number>();
  for (let u = 0; u < users; u++) {
    const want = Math.min(
      users - 1,
      u === 0 ? DEMO_FOLLOWS : Math.floor(rand() * (2 * avgFollows + 1)),
    );
    let got = 0;
    for (let tries = 0; got < want && tries < want * 20; tries++) {
      const v = pickPopular();
      if (v === u) continue;
      const key = u * users + v;
      if (followSeen.has(key)) continue;
      followSeen.add(key);
      followPairs.push(u, v);
      got++;
    }
  }
  followSeen.clear();

  // Posts: authors skewed towards active users (another Zipf order).
  const actPerm = permutation(users, rand);
  const actCdf = zipfTable(users, 0.8);
  const postIds: string[] = new Array(posts);
  const postAuthor = new Uint32Array(posts);
  const postAgeUs = new Float64Array(posts); // how long before now
  const postBody: string[] = new Array(posts);
  const postMedia = new Uint8Array(posts);
  const postStatus = new Uint8Array(posts); // 0 published, 1 draft, 2 deleted
  for (let i = 0; i < posts; i++) {
    postIds[i] = seededUuid(2, i, seed);
    postAuthor[i] = rand() < 0.4 ? actPerm[sampleCdf(actCdf, rand())] : Math.floor(rand() * users);
    postAgeUs[i] = Math.floor(rand() * SPAN_US);
    postBody[i] = `${OPENERS[Math.floor(rand() * OPENERS.length)]} ${
      SUBJECTS[Math.floor(rand() * SUBJECTS.length)]
    }${CLOSERS[Math.floor(rand() * CLOSERS.length)]}`;
    postMedia[i] = rand() < 0.3 ? 1 : 0;
    const s = rand();
    postStatus[i] = s < 0.01 ? 1 : s < 0.015 ? 2 : 0;
  }

  // Likes: posts Zipf-skewed, likers uniform, (user, post) distinct; only on
  // published posts, after the post was created.
  const likeTarget = Math.floor(posts * avgLikes);
  const likePairs: number[] = []; // flattened [user, post, ...]
  const likeAgeUs: number[] = [];
  if (posts > 0) {
    const postPerm = permutation(posts, rand);
    const postCdf = zipfTable(posts, 0.9);
    const likeSeen = new Set<number>();
    for (let tries = 0; likePairs.length / 2 < likeTarget && tries < likeTarget * 4; tries++) {
      const p = rand() < 0.6 ? postPerm[sampleCdf(postCdf, rand())] : Math.floor(rand() * posts);
      const u = Math.floor(rand() * users);
      if (postStatus[p] !== 0) continue;
      const key = u * posts + p;
      if (likeSeen.has(key)) continue;
      likeSeen.add(key);
      likePairs.push(u, p);
      likeAgeUs.push(Math.floor(rand() * postAgeUs[p]));
    }
  }

  return {
    users,
    posts,
    nowUs,
    userIds,
    usernames,
    displayNames,
    userCreatedUs,
    followPairs,
    postIds,
    postAuthor,
    postAgeUs,
    postBody,
    postMedia,
    postStatus,
    likePairs,
    likeAgeUs,
  };
}

const STATUS = ["published", "draft", "deleted"];

const SONG_WORDS_A = [
  "Velvet",
  "Paper",
  "Neon",
  "Hollow",
  "Silver",
  "Amber",
  "Static",
  "Northern",
  "Broken",
  "Electric",
  "Quiet",
  "Crimson",
  "Lonely",
  "Golden",
  "Midnight",
  "Glass",
  "Faded",
  "Wild",
  "Sugar",
  "Cobalt",
  "Rusty",
  "Lunar",
  "Honey",
  "Stormy",
];
const SONG_WORDS_B = [
  "Harbor",
  "Satellite",
  "Lantern",
  "Highway",
  "Orchard",
  "Telephone",
  "Carousel",
  "Anthem",
  "Skyline",
  "Rivers",
  "Window",
  "Parade",
  "Engine",
  "Garden",
  "Mirror",
  "Compass",
  "Avenue",
  "Letters",
  "Thunder",
  "Balloon",
  "Signal",
  "Lullaby",
  "Fever",
  "Horizon",
];
const SONG_WORDS_C = [
  "",
  "",
  "",
  " Blues",
  " Song",
  " Again",
  " Tonight",
  " Forever",
  " (Reprise)",
];
const BAND_NOUNS = [
  "Foxes",
  "Amps",
  "Sparrows",
  "Drifters",
  "Comets",
  "Tigers",
  "Echoes",
  "Machines",
  "Wolves",
  "Lanterns",
  "Mirrors",
  "Owls",
  "Rivals",
  "Strangers",
  "Pilots",
  "Ghosts",
];
const FIRST_NAMES = ["Ada", "Milo", "June", "Otis", "Ivy", "Rafe", "Nell", "Cass", "Lou", "Wren"];
const LAST_NAMES = [
  "Harlow",
  "Vance",
  "Okafor",
  "Lindqvist",
  "Moreau",
  "Castillo",
  "Byrne",
  "Sato",
];
const LYRIC_SUBJECTS = [
  "the neon rain",
  "your paper heart",
  "a silver train",
  "the hollow moon",
  "my static radio",
  "the amber streetlights",
  "a borrowed guitar",
  "the midnight ferry",
  "your crimson scarf",
];
const LYRIC_VERBS = [
  "keeps falling on",
  "is calling for",
  "rolls across",
  "burns a hole in",
  "sings softly to",
  "drifts away from",
  "waits outside",
  "dances over",
];
const LYRIC_OBJECTS = [
  "my velvet shoes",
  "the empty harbor",
  "this lonely highway",
  "the garden wall",
  "our summer window",
  "the carousel lights",
  "a thousand letters",
  "the northern sky",
];
const SONG_KEYWORDS = [
  "indie rock upbeat",
  "synth pop dreamy",
  "folk acoustic mellow",
  "garage rock loud",
  "soul slow ballad",
  "electro dance night",
  "country road trip",
  "punk fast short",
];

/** One synthetic catalog song (invented title, artist and line; never real lyrics). */
export function syntheticSong(i: number, seed = 42) {
  const rand = mulberry32(hash32(seed ^ hash32(i + 0x51ed)));
  const pick = <T>(list: T[]) => list[Math.floor(rand() * list.length)];
  const title = `${pick(SONG_WORDS_A)} ${pick(SONG_WORDS_B)}${pick(SONG_WORDS_C)}`;
  const artist = rand() < 0.6
    ? `The ${pick(SONG_WORDS_A)} ${pick(BAND_NOUNS)}`
    : `${pick(FIRST_NAMES)} ${pick(LAST_NAMES)}`;
  return {
    id: seededUuid(0x50, i, seed),
    title,
    artist,
    album: rand() < 0.8 ? `${pick(SONG_WORDS_B)} ${pick(BAND_NOUNS)}` : null,
    year: 1960 + Math.floor(rand() * 66),
    lyrics: `${pick(LYRIC_SUBJECTS)} ${pick(LYRIC_VERBS)} ${pick(LYRIC_OBJECTS)}`,
    keywords: pick(SONG_KEYWORDS),
    // Zipf-like: a few songs are very popular.
    popularity: Math.floor(100_000 / (1 + i * (0.5 + rand()))),
  };
}

/**
 * Inserts `n` synthetic songs into the recall catalog (COPY, deterministic for a seed), then
 * ANALYZE. Returns how many were written.
 */
export async function seedSongs(sql: postgres.Sql, n: number, seed = 42): Promise<number> {
  if (n <= 0) return 0;
  let written = 0;
  await sql.begin(async (tx) => {
    written = await copyRows(
      tx,
      "public.songs (id, title, artist, album, year, lyrics_excerpt, keywords, popularity)",
      n,
      (i) => {
        const s = syntheticSong(i, seed);
        return `${s.id}\t${cp(s.title)}\t${cp(s.artist)}\t${cp(s.album)}\t${s.year}\t${
          cp(s.lyrics)
        }\t${cp(s.keywords)}\t${s.popularity}`;
      },
    );
  });
  await sql.unsafe("analyze public.songs");
  return written;
}

/** Inserts the planned data set (one transaction, COPY), then VACUUM ANALYZE. */
export async function seed(sql: postgres.Sql, opts: SeedOptions): Promise<SeedResult> {
  const t0 = performance.now();
  const nowUs = Date.now() * 1000;
  const p = plan(opts, nowUs);
  const userTs = tsText(p.userCreatedUs);

  await sql.begin(async (tx) => {
    await copyRows(
      tx,
      "auth.users (id, email, raw_user_meta_data, created_at)",
      p.users,
      (i) =>
        `${p.userIds[i]}\t${i === 0 ? DEMO_EMAIL : `${p.usernames[i]}@rockout.local`}\t${
          cp(JSON.stringify({ username: p.usernames[i], display_name: p.displayNames[i] }))
        }\t${userTs}`,
    );
    await copyRows(
      tx,
      "public.profiles (id, username, display_name, avatar_url, bio, created_at, updated_at)",
      p.users,
      (i) =>
        `${p.userIds[i]}\t${p.usernames[i]}\t${cp(p.displayNames[i])}\t` +
        `https://cdn.rockout.local/avatars/${p.userIds[i]}.jpg\t` +
        `${
          i % 3 === 0 ? "\\N" : cp(`${p.displayNames[i]} — music is life.`)
        }\t${userTs}\t${userTs}`,
    );
    await copyRows(
      tx,
      "public.follows (follower_id, followee_id, created_at)",
      p.followPairs.length / 2,
      (i) =>
        `${p.userIds[p.followPairs[2 * i]]}\t${p.userIds[p.followPairs[2 * i + 1]]}\t${
          tsText(p.nowUs - Math.floor((hash32(i ^ 0x5bd1e995) / 4294967296) * SPAN_US))
        }`,
    );
    await copyRows(
      tx,
      "public.posts (id, author_id, body, media_url, thumbnail_url, status, created_at, updated_at)",
      p.posts,
      (i) => {
        const ts = tsText(p.nowUs - p.postAgeUs[i]);
        const media = p.postMedia[i]
          ? `https://cdn.rockout.local/media/${
            p.postIds[i]
          }.mp3\thttps://cdn.rockout.local/thumbs/${p.postIds[i]}.jpg`
          : "\\N\t\\N";
        return `${p.postIds[i]}\t${p.userIds[p.postAuthor[i]]}\t${cp(p.postBody[i])}\t${media}\t${
          STATUS[p.postStatus[i]]
        }\t${ts}\t${ts}`;
      },
    );
    await copyRows(
      tx,
      "public.likes (user_id, post_id, created_at)",
      p.likePairs.length / 2,
      (i) =>
        `${p.userIds[p.likePairs[2 * i]]}\t${p.postIds[p.likePairs[2 * i + 1]]}\t${
          tsText(p.nowUs - p.likeAgeUs[i])
        }`,
    );
  });

  const songs = await seedSongs(sql, opts.songs ?? 2000, opts.seed ?? 42);

  // Fresh statistics and visibility map (index-only scans) for the planner.
  try {
    await sql.unsafe(
      "vacuum (analyze) auth.users, public.profiles, public.follows, public.posts, public.likes",
    );
  } catch {
    await sql.unsafe("analyze public.profiles, public.follows, public.posts, public.likes");
  }

  return {
    users: p.users,
    posts: p.posts,
    follows: p.followPairs.length / 2,
    likes: p.likePairs.length / 2,
    songs,
    ms: Math.round(performance.now() - t0),
  };
}

function parseArgs(args: string[]): SeedOptions {
  const out: SeedOptions = { users: 1000, posts: 10000 };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const [flag, inline] = a.includes("=") ? a.split("=", 2) : [a, undefined];
    const val = () => {
      const v = inline ?? args[++i];
      const n = Number(v);
      if (v === undefined || !Number.isFinite(n) || n < 0) {
        throw new Error(`${flag} needs a non-negative number, got ${JSON.stringify(v)}`);
      }
      return n;
    };
    switch (flag) {
      case "--users":
        out.users = val();
        break;
      case "--posts":
        out.posts = val();
        break;
      case "--follows":
        out.follows = val();
        break;
      case "--likes":
        out.likes = val();
        break;
      case "--seed":
        out.seed = val();
        break;
      case "--songs":
        out.songs = val();
        break;
      default:
        throw new Error(
          `unknown argument ${
            JSON.stringify(a)
          }; usage: seed --users N --posts M [--follows F] [--likes L] [--seed S] [--songs N]`,
        );
    }
  }
  if (out.users < 1) throw new Error("--users must be at least 1 (the demo user)");
  return out;
}

if (import.meta.main) {
  // Default: the database of the running `npm start`.
  const { useLocalStack } = await import("../dev/stack.ts");
  await useLocalStack();
  const url = Deno.env.get("DATABASE_URL");
  if (!url) {
    console.error(
      "no database: start the stack (npm start), or set DATABASE_URL to a migrated database " +
        "(npm run migrate)",
    );
    Deno.exit(2);
  }
  let opts;
  try {
    opts = parseArgs(Deno.args);
  } catch (err) {
    console.error((err as Error).message);
    Deno.exit(2);
  }
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    if (!(await isEmpty(sql))) {
      console.error(
        "database already has profiles; seed expects an empty database (deterministic ids " +
          'would collide). For a fresh one, see "Seed a fresh database" in README.md.',
      );
      Deno.exitCode = 1;
    } else {
      const r = await seed(sql, opts);
      console.log(
        `seeded ${r.users} users, ${r.posts} posts, ${r.follows} follows, ${r.likes} likes, ` +
          `${r.songs} catalog songs in ${r.ms} ms ` +
          `(demo user ${DEMO_USER_ID})`,
      );
    }
  } catch (err) {
    console.error(err instanceof Error ? err.message : err);
    Deno.exitCode = 1;
  } finally {
    await sql.end();
  }
}
