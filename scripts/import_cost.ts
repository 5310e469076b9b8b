/**
 * What each entry point costs to import: the npm packages in its module graph (from
 * `deno info --json`) and the median wall time of `await import(entry)` in a fresh process under
 * Deno and under Bun (warm caches: one unmeasured run first). Prints a Markdown table.
 * Usage: deno run -A scripts/import_cost.ts [runs=5]
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const deno = `${root}node_modules/.bin/deno`;
const bun = `${root}node_modules/.bin/bun`;
const ENTRIES = ["mod.ts", "sae/mod.ts", "data/mod.ts", "testing/mod.ts", "server/mod.ts"];
/** The npm packages alone, for scale. */
const PACKAGES = ["apache-arrow", "fast-check", "hono"];
const runs = Number(Deno.args[0] ?? 5);

function npmPackages(entry: string): string[] {
  const r = spawnSync(deno, ["info", "--json", entry], { cwd: root, encoding: "utf8" });
  const graph = JSON.parse(r.stdout) as { modules: { specifier: string }[] };
  const names = new Set<string>();
  let local = 0;
  for (const { specifier } of graph.modules) {
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
