/**
 * The dashboard's static files and the plotting library (uPlot, from node_modules: no CDN), read
 * once so the app itself stays a pure function of what it is given.
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

export interface Asset {
  body: Uint8Array;
  type: string;
}

/** URL path → file contents. */
export type Assets = Record<string, Asset>;

const here = (rel: string) => fileURLToPath(new URL(rel, import.meta.url));

const UPLOT_JS = "../node_modules/uplot/dist/uPlot.iife.min.js";
const UPLOT_CSS = "../node_modules/uplot/dist/uPlot.min.css";

async function read(rel: string): Promise<Uint8Array> {
  const path = here(rel);
  try {
    return new Uint8Array(await readFile(path));
  } catch (e) {
    const hint = rel.includes("node_modules")
      ? " (run npm install: uPlot comes from the uplot package)"
      : "";
    throw new Error(`dashboard asset ${path} cannot be read: ${(e as Error).message}${hint}`);
  }
}

/** uPlot's script and stylesheet as text, for pages that must work offline (report.html). */
export async function readUplot(): Promise<{ js: string; css: string }> {
  const dec = new TextDecoder();
  const [js, css] = await Promise.all([read(UPLOT_JS), read(UPLOT_CSS)]);
  return { js: dec.decode(js), css: dec.decode(css) };
}

export async function loadAssets(): Promise<Assets> {
  const files: [string, string, string][] = [
    ["/", "./dashboard/index.html", "text/html; charset=utf-8"],
    ["/dashboard/app.js", "./dashboard/app.js", "text/javascript; charset=utf-8"],
    ["/dashboard/style.css", "./dashboard/style.css", "text/css; charset=utf-8"],
    ["/vendor/uPlot.iife.min.js", UPLOT_JS, "text/javascript; charset=utf-8"],
    ["/vendor/uPlot.min.css", UPLOT_CSS, "text/css; charset=utf-8"],
  ];
  const out: Assets = {};
  for (const [url, rel, type] of files) out[url] = { body: await read(rel), type };
  return out;
}
