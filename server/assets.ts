/**
 * The dashboard's static files and the plotting library (uPlot, from node_modules: no CDN), read
 * once so the app itself stays a pure function of what it is given.
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export interface Asset {
  body: Uint8Array;
  type: string;
}

/** URL path → file contents. */
export type Assets = Record<string, Asset>;

const here = (rel: string) => fileURLToPath(new URL(rel, import.meta.url));

/**
 * A file of the uplot package from the nearest node_modules above this module: the repo's, or,
 * in an installed package, the project's that installed it. Missing: the repo's path, for the error.
 */
function uplot(file: string): string {
  for (let dir = here("."); dirname(dir) !== dir; dir = dirname(dir)) {
    const path = join(dir, "node_modules", "uplot", "dist", file);
    if (existsSync(path)) return path;
  }
  return here(`../node_modules/uplot/dist/${file}`);
}
const UPLOT_JS = "uPlot.iife.min.js";
const UPLOT_CSS = "uPlot.min.css";

async function read(path: string): Promise<Uint8Array> {
  try {
    return new Uint8Array(await readFile(path));
  } catch (e) {
    const hint = path.includes("node_modules")
      ? " (run npm install: uPlot comes from the uplot package)"
      : "";
    throw new Error(`dashboard asset ${path} cannot be read: ${(e as Error).message}${hint}`);
  }
}

/** uPlot's script and stylesheet as text, for pages that must work offline (report.html). */
export async function readUplot(): Promise<{ js: string; css: string }> {
  const dec = new TextDecoder();
  const [js, css] = await Promise.all([read(uplot(UPLOT_JS)), read(uplot(UPLOT_CSS))]);
  return { js: dec.decode(js), css: dec.decode(css) };
}

export async function loadAssets(): Promise<Assets> {
  const files: [string, string, string][] = [
    ["/", here("./dashboard/index.html"), "text/html; charset=utf-8"],
    ["/dashboard/app.js", here("./dashboard/app.js"), "text/javascript; charset=utf-8"],
    ["/dashboard/style.css", here("./dashboard/style.css"), "text/css; charset=utf-8"],
    ["/vendor/uPlot.iife.min.js", uplot(UPLOT_JS), "text/javascript; charset=utf-8"],
    ["/vendor/uPlot.min.css", uplot(UPLOT_CSS), "text/css; charset=utf-8"],
  ];
  const out: Assets = {};
  for (const [url, path, type] of files) out[url] = { body: await read(path), type };
  return out;
}
