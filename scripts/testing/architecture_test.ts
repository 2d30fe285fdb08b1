/**
 * The dependency rules of the house, read from the code itself:
 * - no function imports another function (what two share lives under `shared/`), and the
 *   deployed code (non-test files under `functions/` and `shared/`) never imports the local
 *   tooling in `scripts/` or `loadtest/`;
 * - configuration comes in, it is not fetched: nothing under `functions/` or `shared/` reads
 *   `Deno.env` but each function's entry point (`functions/<slug>/index.ts`, which builds the
 *   deps from it); everything else gets `deps` or an `Env`;
 * - tests share a process (`deno test --parallel`) and build their apps from deps: no test (nor
 *   test helper) changes the process environment, and none imports a module of `functions/`
 *   or `shared/` with `await import(` (which only made sense while modules read the
 *   environment at load).
 */
import { assert, assertEquals } from "./assert.ts";

const root = new URL("../../", import.meta.url);

/**
 * Test files allowed to reach into another function, each with its reason. Code is never
 * allowed to: only a test that checks how two functions work together.
 */
const crossFunctionTests: Record<string, string> = {
  // Writes through recall-resolve, then reads recall: the cache invalidation between them.
  "functions/recall/recall_test.ts": "functions/recall-resolve/app.ts",
};

/** The module specifiers `source` imports: static, re-exported, side-effect and dynamic. */
export function importSpecifiers(source: string): string[] {
  const found: string[] = [];
  const patterns = [
    /\b(?:import|export)\s[^"'`;]*?\bfrom\s*["']([^"']+)["']/g,
    /\bimport\s*["']([^"']+)["']/g,
    /\bimport\s*\(\s*["']([^"']+)["']\s*\)/g,
  ];
  for (const pattern of patterns) {
    for (const match of source.matchAll(pattern)) found.push(match[1]);
  }
  return found;
}

/** A repo-relative path for `specifier` imported from `file`, or null if not a relative path. */
export function resolveImport(file: string, specifier: string): string | null {
  if (!specifier.startsWith("../") && !specifier.startsWith("../../")) return null;
  const url = new URL(specifier, new URL(file, "file:///repo/"));
  return decodeURIComponent(url.pathname.slice("/repo/".length));
}

/**
 * The rule `file` breaks by importing `target` (both repo-relative), or null when it may.
 */
export function violation(file: string, target: string): string | null {
  const isTest = /_test\.ts$/.test(file);
  const [top, fn] = file.split("/");
  const [targetTop, targetFn] = target.split("/");
  const inFunction = (parts: string[]) => parts.length > 2; // functions/<slug>/<file>
  if (
    top === "functions" && targetTop === "functions" && inFunction(file.split("/")) &&
    inFunction(target.split("/")) && fn !== targetFn && crossFunctionTests[file] !== target
  ) {
    return `${file} imports ${target}: a function imports another function (move it to shared/)`;
  }
  if (
    !isTest && (top === "functions" || top === "shared") &&
    (targetTop === "scripts" || targetTop === "loadtest")
  ) {
    return `${file} imports ${target}: deployed code imports ${targetTop}/`;
  }
  return null;
}

/**
 * `source` without its comments (a comment may well name what the code must not do), and
 * with `strings` also without the contents of its string literals (the code of a child
 * process a test runs, a message). One pass, so a `//` in a string is no comment.
 */
export function stripped(source: string, strings = false): string {
  return source.replace(
    /\/\*[\s\S]*?\*\/|\/\/[^\n]*|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`(?:[^`\\]|\\.)*`/g,
    (token) => token.startsWith("/") ? "" : strings ? `${token[0]}${token[0]}` : token,
  );
}

/**
 * Files under `functions/` and `shared/` besides `functions/<slug>/index.ts` that may read
 * `Deno.env`, each with its reason.
 */
const envReaders: Record<string, string> = {
  // A child process of breaker_store_test.ts: its entry point, as index.ts is a function's.
  "shared/resilience/testdata/breaker_child.ts": "builds its deps from its own environment",
  // Passes PATH, HOME and DENO_DIR on to the `npm run worker` process it starts.
  "functions/jobs-worker/jobs-worker_test.ts": "the environment of a child process",
};

/** Test helpers allowed to set the process environment, each with its reason. */
const envWriters: Record<string, string> = {
  // The runner itself: what it sets is for the load smoke it runs in its own process.
  "scripts/testing/run_tests.ts": "SMOKE_SECRET_KEY for loadtest/smoke.ts",
};

/**
 * The rules `file` (repo-relative) breaks by what its code does with the environment and
 * with dynamic imports; empty when none.
 */
export function codeViolations(file: string, source: string): string[] {
  const code = stripped(source, true);
  const isTest = /_test\.ts$/.test(file);
  const isTestHelper = file.startsWith("scripts/testing/") && !(file in envWriters);
  const [top] = file.split("/");
  const found: string[] = [];
  if (
    (top === "functions" || top === "shared") && !/^functions\/[^/]+\/index\.ts$/.test(file) &&
    !(file in envReaders) && /\bDeno\.env\b/.test(code)
  ) {
    found.push(
      `${file} reads Deno.env: only functions/<slug>/index.ts does (pass deps, or an Env)`,
    );
  }
  if ((isTest || isTestHelper) && /\bDeno\.env\.(set|delete)\s*\(/.test(code)) {
    found.push(
      `${file} changes the process environment: give settings to functionTestEnv({ env }) ` +
        `or env.withEnv(), or a literal env to loadConfig / the function's config`,
    );
  }
  if (isTest) {
    for (const [, argument] of stripped(source).matchAll(/\bimport\s*\(\s*([^)]*?)\s*\)/g)) {
      const literal = argument.match(/^["']([^"']+)["']$/)?.[1];
      const target = literal?.startsWith(".")
        ? decodeURIComponent(new URL(literal, new URL(file, "file:///repo/")).pathname.slice(6))
        : null;
      if (literal === undefined) {
        found.push(`${file} imports ${argument} dynamically: import it statically`);
      } else if (target?.startsWith("functions/") || target?.startsWith("shared/")) {
        found.push(`${file} imports ${target} with await import(: import it statically`);
      }
    }
  }
  return found;
}

async function* tsFiles(dir: string): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(new URL(dir, root))) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) yield* tsFiles(path);
    else if (entry.isFile && /\.(ts|tsx)$/.test(entry.name)) yield path;
  }
}

Deno.test("no function imports another, and deployed code imports no scripts/ or loadtest/", async () => {
  const broken: string[] = [];
  let imports = 0;
  for (const dir of ["functions", "shared"]) {
    for await (const file of tsFiles(dir)) {
      const source = await Deno.readTextFile(new URL(file, root));
      for (const specifier of importSpecifiers(source)) {
        const target = resolveImport(file, specifier);
        if (!target) continue;
        imports++;
        const problem = violation(file, target);
        if (problem) broken.push(problem);
      }
    }
  }
  assert(imports > 100, `read only ${imports} relative imports: the scan is broken`);
  assertEquals(broken, []);
});

Deno.test("only functions' index.ts read Deno.env; tests neither set it nor import functions/ or shared/ dynamically", async () => {
  const broken: string[] = [];
  let files = 0;
  for (const dir of ["functions", "shared", "scripts", "loadtest"]) {
    for await (const file of tsFiles(dir)) {
      files++;
      if (file === "scripts/testing/architecture_test.ts") continue; // its examples break them
      broken.push(...codeViolations(file, await Deno.readTextFile(new URL(file, root))));
    }
  }
  assert(files > 100, `read only ${files} files: the scan is broken`);
  assertEquals(broken, []);
});

Deno.test("the environment and dynamic-import rules: what breaks them, what doesn't", () => {
  const reads = 'const env = Deno.env.toObject();\nconst x = Deno.env.get("X");';
  assertEquals(codeViolations("functions/feed/index.ts", reads), []);
  assert(codeViolations("functions/feed/app.ts", reads)[0]?.includes("reads Deno.env"));
  assert(codeViolations("shared/config.ts", reads)[0]?.includes("reads Deno.env"));
  assert(codeViolations("functions/feed/feed_test.ts", reads)[0]?.includes("reads Deno.env"));
  // Comments and strings (a child process's code) may name it; scripts may read it.
  assertEquals(codeViolations("shared/deps.ts", "/** passes `Deno.env.toObject()` */\n"), []);
  assertEquals(codeViolations("shared/x.ts", 'f("http://x"); // Deno.env.get\n'), []);
  assertEquals(codeViolations("functions/a/a_test.ts", "run(`f(Deno.env.toObject())`);"), []);
  assert(codeViolations("shared/x.ts", 'f("//"); Deno.env.get("X");')[0]?.includes("Deno.env"));
  assertEquals(codeViolations("scripts/dev/worker.ts", reads), []);

  for (const write of ['Deno.env.set("A", "1");', 'Deno.env.delete("A");']) {
    assert(
      codeViolations("scripts/dev/gateway_test.ts", write)[0]?.includes("process environment"),
    );
    assert(codeViolations("scripts/testing/test_env.ts", write)[0]?.includes("environment"));
    assertEquals(codeViolations("scripts/testing/run_tests.ts", write), []);
    assertEquals(codeViolations("scripts/dev/start.ts", write), []);
  }

  const dynamic = (specifier: string) => `const m = await import(${specifier});`;
  assert(
    codeViolations("functions/feed/feed_test.ts", dynamic('"./app.ts"'))[0]?.includes(
      "functions/feed/app.ts with await import(",
    ),
  );
  assert(
    codeViolations("scripts/dev/gateway_test.ts", dynamic('"../../shared/data/db.ts"'))[0]
      ?.includes("shared/data/db.ts"),
  );
  assert(
    codeViolations("functions/rate_limits_test.ts", dynamic("`./${slug}/app.ts`"))[0]
      ?.includes("dynamically"),
  );
  assertEquals(codeViolations("scripts/testing/newcomer_test.ts", dynamic('"postgres"')), []);
  assertEquals(codeViolations("scripts/bench/loadtest.ts", dynamic("`./${name}.ts`")), []);
});

Deno.test("the checker sees every import form and names what breaks a rule", () => {
  assertEquals(
    importSpecifiers(
      `import { a } from "../posts/app.ts";\nimport type {\n  B,\n} from '../../scripts/testing/seed.ts';\n` +
        `export { c } from "./c.ts";\nimport "../../loadtest/run.ts";\n` +
        `const d = await import("../feed/app.ts");\nimport { z } from "zod";`,
    ).sort(),
    [
      "../../loadtest/run.ts",
      "../../scripts/testing/seed.ts",
      "../feed/app.ts",
      "../posts/app.ts",
      "./c.ts",
      "zod",
    ],
  );
  assertEquals(resolveImport("functions/feed/app.ts", "../posts/app.ts"), "functions/posts/app.ts");
  assertEquals(resolveImport("functions/feed/app.ts", "zod"), null);

  const sibling = violation("functions/thread-summary/app.ts", "functions/posts/thread.ts");
  assert(sibling?.includes("a function imports another function"), String(sibling));
  const fromTest = violation("functions/feed/feed_test.ts", "functions/posts/app.ts");
  assert(fromTest?.includes("a function imports another function"), String(fromTest));
  assert(violation("shared/data/db.ts", "scripts/testing/seed.ts")?.includes("imports scripts/"));
  assert(violation("functions/feed/app.ts", "loadtest/run.ts")?.includes("imports loadtest/"));

  assertEquals(violation("functions/feed/app.ts", "shared/domain/threads.ts"), null);
  assertEquals(violation("functions/feed/app.ts", "functions/feed/queries.ts"), null);
  assertEquals(violation("functions/feed/feed_test.ts", "scripts/testing/seed.ts"), null);
  assertEquals(violation("functions/rate_limits_test.ts", "functions/posts/app.ts"), null);
  assertEquals(
    violation("functions/recall/recall_test.ts", "functions/recall-resolve/app.ts"),
    null,
  );
});
