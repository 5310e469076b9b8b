/**
 * The plotting library uPlot, read from node_modules (no CDN): the offline report inlines it and
 * the server's dashboard serves it, so it lives below both.
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const FILES = { js: "uPlot.iife.min.js", css: "uPlot.min.css" } as const;

/**
 * A file of the uplot package from the nearest node_modules above this module: the repo's, or, in
 * an installed package, the project's that installed it. Missing: the repo's path, for the error.
 */
function uplotPath(file: string): string {
  const here = fileURLToPath(new URL(".", import.meta.url));
  for (let dir = here; dirname(dir) !== dir; dir = dirname(dir)) {
    const path = join(dir, "node_modules", "uplot", "dist", file);
    if (existsSync(path)) return path;
  }
  return fileURLToPath(new URL(`../../node_modules/uplot/dist/${file}`, import.meta.url));
}

/** uPlot's script or stylesheet, with a hint to run npm install when it is missing. */
export async function readUplotFile(which: keyof typeof FILES): Promise<Uint8Array> {
  const path = uplotPath(FILES[which]);
  try {
    return new Uint8Array(await readFile(path));
  } catch (e) {
    throw new Error(
      `dashboard asset ${path} cannot be read: ${
        (e as Error).message
      } (run npm install: uPlot comes from the uplot package)`,
    );
  }
}

/** uPlot's script and stylesheet as text, for pages that must work offline (report.html). */
export async function readUplot(): Promise<{ js: string; css: string }> {
  const dec = new TextDecoder();
  const [js, css] = await Promise.all([readUplotFile("js"), readUplotFile("css")]);
  return { js: dec.decode(js), css: dec.decode(css) };
}
