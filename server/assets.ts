/**
 * The dashboard's static files and the plotting library (uPlot, from node_modules: no CDN), read
 * once so the app itself stays a pure function of what it is given.
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { readUplotFile } from "../sae/eval/uplot.ts";

export { readUplot } from "../sae/eval/uplot.ts";

export interface Asset {
  body: Uint8Array;
  type: string;
}

/** URL path → file contents. */
export type Assets = Record<string, Asset>;

async function read(rel: string): Promise<Uint8Array> {
  const path = fileURLToPath(new URL(rel, import.meta.url));
  try {
    return new Uint8Array(await readFile(path));
  } catch (e) {
    throw new Error(`dashboard asset ${path} cannot be read: ${(e as Error).message}`);
  }
}

export async function loadAssets(): Promise<Assets> {
  const files: [string, () => Promise<Uint8Array>, string][] = [
    ["/", () => read("./dashboard/index.html"), "text/html; charset=utf-8"],
    ["/dashboard/app.js", () => read("./dashboard/app.js"), "text/javascript; charset=utf-8"],
    ["/dashboard/style.css", () => read("./dashboard/style.css"), "text/css; charset=utf-8"],
    ["/vendor/uPlot.iife.min.js", () => readUplotFile("js"), "text/javascript; charset=utf-8"],
    ["/vendor/uPlot.min.css", () => readUplotFile("css"), "text/css; charset=utf-8"],
  ];
  const out: Assets = {};
  for (const [url, load, type] of files) out[url] = { body: await load(), type };
  return out;
}
