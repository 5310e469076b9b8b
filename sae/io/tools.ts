/**
 * `convertPath` and `inspectPath` for library users, loaded on their first call: they read and write
 * Arrow stores, so apache-arrow loads only then and the `sae` namespace pulls in no npm package.
 * `formatInspection` is the text `sae inspect` prints.
 */
import type { ConvertOptions, ConvertResult } from "./convert.ts";
import type { InspectOptions } from "./inspect.ts";

export type { ConvertOptions, ConvertResult, InspectOptions };

/** Convert activations to an Arrow store or .npy, or a dictionary to a SAELens folder. */
export async function convertPath(
  input: string,
  out: string,
  o?: ConvertOptions,
): Promise<ConvertResult> {
  return (await import("./convert.ts")).convertPath(input, out, o);
}

/** The format, shapes, dtypes, rows and statistics of activations or a dictionary. */
export async function inspectPath(
  spec: string,
  o?: InspectOptions,
): Promise<Record<string, unknown>> {
  return (await import("./inspect.ts")).inspectPath(spec, o);
}

export function formatInspection(r: Record<string, unknown>): string {
  const lines: string[] = [];
  const show = (
    v: unknown,
  ) => (typeof v === "number"
    ? String(Number(v.toPrecision(6)))
    : Array.isArray(v)
    ? `[${v.join(", ")}]`
    : String(v));
  for (const [k, v] of Object.entries(r)) {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      lines.push(`${k}:`);
      for (const [a, b] of Object.entries(v)) lines.push(`  ${a.padEnd(22)} ${show(b)}`);
    } else lines.push(`${k.padEnd(24)} ${show(v)}`);
  }
  return lines.join("\n");
}
