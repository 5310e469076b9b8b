// The README and docs/ stay true to the tree: every README snippet is an excerpt of the example file
// it names (so running the examples runs the snippets), every relative link reaches a file and,
// with a #fragment, a heading of that file.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { assert, test } from "./harness.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const read = (rel: string) => readFileSync(join(root, rel), "utf8");
const pages = [
  "README.md",
  ...readdirSync(join(root, "docs")).filter((f) => f.endsWith(".md"))
    .map((f) => `docs/${f}`),
];

/** The ```ts blocks of a markdown text, as arrays of lines. */
function tsBlocks(md: string): string[][] {
  return [...md.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) =>
    m[1].replace(/\n$/, "").split("\n")
  );
}

/** Lines of `block` split at `// …` elisions, without blank lines at either end of a piece. */
function pieces(block: string[]): string[][] {
  const out: string[][] = [[]];
  for (const line of block) {
    if (line.trim() === "// …") out.push([]);
    else out[out.length - 1].push(line);
  }
  const trim = (p: string[]) => {
    let a = 0, b = p.length;
    while (a < b && !p[a].trim()) a++;
    while (b > a && !p[b - 1].trim()) b--;
    return p.slice(a, b);
  };
  return out.map(trim).filter((p) => p.length);
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens. */
const slug = (heading: string) =>
  heading.trim().toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, "").replace(/ /g, "-");

function anchors(md: string): Set<string> {
  const body = md.replace(/^```[\s\S]*?^```$/gm, "");
  return new Set([...body.matchAll(/^#{1,6} (.+)$/gm)].map((m) => slug(m[1])));
}

test("docs: every README and tour snippet is an excerpt of the example file it names", () => {
  const named = (page: string) =>
    tsBlocks(read(page)).filter((b) => /^\/\/ examples\/\S+\.ts$/.test(b[0]));
  assert(named("README.md").length >= 2, "expected the README's API snippets");
  assert(named("docs/tour.md").length >= 5, "expected the tour's snippets");
  const blocks = [...named("README.md"), ...named("docs/tour.md")];
  for (const [head, ...rest] of blocks) {
    const file = head.slice(3);
    assert(existsSync(join(root, file)), `README snippet names ${file}, which does not exist`);
    // The files import from ../; the README writes imports as from the repository root.
    const lines = read(file).replaceAll(`from "../`, `from "./`).split("\n");
    let at = 0;
    for (const piece of pieces(rest)) {
      let found = -1;
      for (let i = at; i + piece.length <= lines.length && found < 0; i++) {
        if (piece.every((l, j) => lines[i + j] === l)) found = i;
      }
      assert(
        found >= 0,
        `README snippet of ${file}: these lines are not in the file, in order:\n${
          piece.join("\n")
        }`,
      );
      at = found + piece.length;
    }
  }
});

test("docs: every relative link reaches a file and heading", () => {
  const bad: string[] = [];
  for (const page of pages) {
    const md = read(page).replace(/^```[\s\S]*?^```$/gm, "").replace(/`[^`\n]*`/g, "");
    for (const [, target] of md.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/i.test(target)) continue; // http:, https:, mailto:
      const [path, fragment] = target.split("#");
      const file = path ? join(dirname(join(root, page)), path) : join(root, page);
      if (!existsSync(file)) bad.push(`${page}: ${target} (no such file)`);
      else if (
        fragment && file.endsWith(".md") && !anchors(readFileSync(file, "utf8")).has(fragment)
      ) {
        bad.push(`${page}: ${target} (no such heading)`);
      }
    }
  }
  assert(bad.length === 0, `broken links:\n${bad.join("\n")}`);
});

test("docs: no issue numbers in the README or docs/", () => {
  for (const page of pages) {
    const m = read(page).match(/.*\bissues? #?\d+.*/i);
    assert(!m, `${page} mentions an issue number: ${m?.[0]}`);
  }
});

test("docs/layout.md's table names every top-level folder and sae/'s subfolders, and nothing gone", () => {
  const readme = read("docs/layout.md");
  const start = readme.indexOf("<!-- layout table");
  assert(start >= 0, "docs/layout.md has no layout table marker");
  const table = readme.slice(start, readme.indexOf("\n\n", readme.indexOf("| path", start)));
  const named = new Set([...table.matchAll(/`([\w.]+\/?)`/g)].map((m) => m[1]));
  const dirs = (rel: string) =>
    readdirSync(join(root, rel), { withFileTypes: true })
      .filter((e) => e.isDirectory() && !e.name.startsWith(".") && !IGNORED.has(e.name))
      .map((e) => `${e.name}/`);
  const IGNORED = new Set(["node_modules", "dist", "runs"]);
  const missing = [...dirs("."), ...dirs("sae")].filter((d) => !named.has(d));
  assert(missing.length === 0, `folders the layout table does not name: ${missing.join(", ")}`);
  const gone = [...named].filter((n) =>
    n.endsWith("/") && !existsSync(join(root, n)) && !existsSync(join(root, "sae", n)) &&
    !existsSync(join(root, "tensor", n))
  );
  assert(gone.length === 0, `the layout table names folders that do not exist: ${gone.join(", ")}`);
});
