/**
 * What each entry point costs to import: the npm packages in its module graph (from
 * `deno info --json`) and the median wall time of `await import(entry)` in a fresh process under
 * Deno and under Bun (warm caches: one unmeasured run first). Prints a Markdown table.
 * Usage: deno run -A scripts/import_cost.ts [runs=5]
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { args } from "../tensor/platform/runtime.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
const deno = `${root}node_modules/.bin/deno`;
const bun = `${root}node_modules/.bin/bun`;
const ENTRIES = ["mod.ts", "sae/mod.ts", "data/mod.ts", "testing/mod.ts", "server/mod.ts"];
/** The npm packages alone, for scale. */
const PACKAGES = ["apache-arrow", "fast-check", "hono"];
const runs = Number(args()[0] ?? 5);
const main = import.meta.main;

/**
 * The modules an import of `entry` loads: its static code imports, followed from the entry (a
 * dynamic import loads on its first call, a type-only import not at all).
 */
export function loadedModules(denoBin: string, entry: string, cwd: string): string[] {
  const r = spawnSync(denoBin, ["info", "--json", entry], { cwd, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`deno info ${entry}: ${r.stderr}`);
  const graph = JSON.parse(r.stdout) as {
    roots: string[];
    modules: {
      specifier: string;
      dependencies?: { code?: { specifier: string }; isDynamic?: boolean }[];
    }[];
  };
  const bySpecifier = new Map(graph.modules.map((m) => [m.specifier, m]));
  const loaded = new Set<string>();
  const todo = [...graph.roots];
  while (todo.length) {
    const s = todo.pop()!;
    if (loaded.has(s)) continue;
    loaded.add(s);
    for (const d of bySpecifier.get(s)?.dependencies ?? []) {
      if (d.code && !d.isDynamic) todo.push(d.code.specifier);
    }
  }
  return [...loaded];
}

function npmPackages(entry: string): string[] {
  const names = new Set<string>();
  let local = 0;
  for (const specifier of loadedModules(deno, entry, root)) {
    const m = specifier.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
    if (m) names.add(m[1]);
    else if (specifier.startsWith("file:")) local++;
  }
  return [`${local}`, [...names].sort().join(", ") || "none"];
}

/** Milliseconds for `await import(entry)`, measured inside a fresh process. */
function importMs(runtime: "deno" | "bun", entry: string): number {
  const spec = PACKAGES.includes(entry) ? entry : `./${entry}`;
  const code = `const t0 = performance.now(); await import("${spec}"); ` +
    `console.log(performance.now() - t0);`;
  const args = runtime === "deno"
    ? [deno, ["eval", "--v8-flags=--no-maglev", code]]
    : [bun, ["-e", code]];
  const times: number[] = [];
  for (let i = 0; i <= runs; i++) {
    const r = spawnSync(args[0] as string, args[1] as string[], { cwd: root, encoding: "utf8" });
    if (r.status !== 0) throw new Error(`${runtime} ${entry}: ${r.stderr}`);
    if (i > 0) times.push(Number(r.stdout.trim().split("\n").at(-1)));
  }
  times.sort((a, b) => a - b);
  return times[times.length >> 1];
}

if (main) {
  console.log("| import | local modules | npm packages loaded | Deno ms | Bun ms |");
  console.log("| --- | --- | --- | --- | --- |");
  for (const entry of ENTRIES) {
    const [local, npm] = npmPackages(entry);
    const d = importMs("deno", entry).toFixed(0);
    const b = importMs("bun", entry).toFixed(0);
    console.log(`| \`${entry}\` | ${local} | ${npm} | ${d} | ${b} |`);
  }
  for (const name of PACKAGES) {
    const d = importMs("deno", name).toFixed(0);
    const b = importMs("bun", name).toFixed(0);
    console.log(`| \`${name}\` alone | 0 | ${name} | ${d} | ${b} |`);
  }
}
