/**
 * The import-direction check: the library's layers import only downward,
 * tensor ← autodiff ← data ← sae ← (server, testing), with the top-level entries (mod.ts, cli.ts)
 * above them all. Run as a script (exit 1 on a violation) or call `importViolations` from a test.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, normalize, relative, sep } from "node:path";

/** A folder's rank: a file may import only from folders of lower or equal rank. */
export const LAYERS: Readonly<Record<string, number>> = {
  tensor: 0,
  autodiff: 1,
  data: 2,
  sae: 3,
  server: 4,
  testing: 4,
};

export interface Violation {
  file: string;
  line: number;
  specifier: string;
  from: string;
  to: string;
}

// Static imports/exports (`from "…"`, also multi-line ones) and dynamic `import("…")`.
const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)["'](\.{1,2}\/[^"']+)["']/gm;

/** The layer a repo-relative path belongs to, or null for files outside the layers. */
function layerOf(path: string): string | null {
  const top = path.split(/[\\/]/)[0];
  return top in LAYERS ? top : null;
}

/** Violations in one file's source text, given its path relative to the repository root. */
export function violationsIn(path: string, source: string): Violation[] {
  const from = layerOf(path);
  if (from === null) return [];
  const out: Violation[] = [];
  for (const m of source.matchAll(SPECIFIER)) {
    const target = normalize(join(dirname(path), m[1])).split(sep).join("/");
    const to = layerOf(target);
    if (to === null || target.startsWith("..")) {
      out.push(violation(path, source, m, from, to ?? target));
    } else if (LAYERS[to] > LAYERS[from] || (LAYERS[to] === LAYERS[from] && to !== from)) {
      out.push(violation(path, source, m, from, to));
    }
  }
  return out;
}

function violation(
  file: string,
  source: string,
  m: RegExpMatchArray,
  from: string,
  to: string,
): Violation {
  const line = source.slice(0, m.index).split("\n").length;
  return { file, line, specifier: m[1], from, to };
}

function* tsFiles(root: string, dir: string): Generator<string> {
  for (const name of readdirSync(join(root, dir)).sort()) {
    const rel = join(dir, name);
    if (statSync(join(root, rel)).isDirectory()) yield* tsFiles(root, rel);
    else if (/\.(ts|js)$/.test(name)) yield rel;
  }
}

/** Every violation under `root`'s layer folders. */
export function importViolations(root: string): Violation[] {
  const out: Violation[] = [];
  for (const layer of Object.keys(LAYERS)) {
    let isDir = false;
    try {
      isDir = statSync(join(root, layer)).isDirectory();
    } catch { /* a layer not present yet */ }
    if (!isDir) continue;
    for (const file of tsFiles(root, layer)) {
      const rel = relative(root, join(root, file)).split(sep).join("/");
      out.push(...violationsIn(rel, readFileSync(join(root, file), "utf8")));
    }
  }
  return out;
}

export function describe(v: Violation): string {
  return `${v.file}:${v.line}: ${v.from} imports ${v.to} ("${v.specifier}")`;
}

if (import.meta.main) {
  const root = join(dirname(new URL(import.meta.url).pathname), "..");
  const found = importViolations(root);
  for (const v of found) console.error(describe(v));
  console.log(
    found.length
      ? `${found.length} import(s) run the wrong way (${
        Object.entries(LAYERS).map(([k, r]) => `${k}=${r}`).join(", ")
      })`
      : "imports run one way: tensor ← autodiff ← data ← sae ← server/testing",
  );
  if (found.length) {
    const g = globalThis as {
      Deno?: { exit(c: number): never };
      process?: { exit(c: number): never };
    };
    (g.Deno ?? g.process)?.exit(1);
  }
}
