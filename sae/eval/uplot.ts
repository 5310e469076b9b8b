/**
 * The plotting library uPlot, read from node_modules (no CDN): the offline report inlines it and
 * the server's dashboard serves it, so it lives below both.
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const FILES = {
  js: "../../node_modules/uplot/dist/uPlot.iife.min.js",
  css: "../../node_modules/uplot/dist/uPlot.min.css",
} as const;

/** uPlot's script or stylesheet, with a hint to run npm install when it is missing. */
export async function readUplotFile(which: keyof typeof FILES): Promise<Uint8Array> {
  const path = fileURLToPath(new URL(FILES[which], import.meta.url));
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
