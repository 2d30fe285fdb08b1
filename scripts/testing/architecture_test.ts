/**
 * The dependency rules of the house, read from the import statements of the code itself:
 * no function imports another function (what two share lives under `shared/`), and the
 * deployed code (non-test files under `functions/` and `shared/`) never imports the local
 * tooling in `scripts/` or `loadtest/`.
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
  assert(violation("shared/db.ts", "scripts/testing/seed.ts")?.includes("imports scripts/"));
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
