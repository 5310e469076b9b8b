/**
 * Whether several model folders read token ids alike: models compared on the same token rows (a
 * crosscoder across a base and a finetuned model) must share their tokenizer, or the same id means
 * different text to each. Equal tokenizer.json bytes agree; files that differ only in layout (key
 * order, whitespace) agree too; anything else is an error naming both folders and the first
 * difference (a token's id, the vocabulary size, the merges, another field).
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { TokenizerError } from "./tokenizer.ts";

/** JSON with object keys sorted: equal for files that differ only in layout. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    return `{${
      Object.keys(o).sort().map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`).join(",")
    }}`;
  }
  return JSON.stringify(v);
}

function parse(path: string, text: string): Record<string, unknown> {
  try {
    const v = JSON.parse(text);
    if (v && typeof v === "object" && !Array.isArray(v)) return v;
  } catch (e) {
    throw new TokenizerError(`${path}: not valid JSON: ${(e as Error).message}`);
  }
  throw new TokenizerError(`${path}: expected a JSON object`);
}

/** The first difference between two parsed tokenizer.json files, in words. */
function firstDifference(a: Record<string, unknown>, b: Record<string, unknown>): string {
  const ma = (a.model ?? {}) as Record<string, unknown>,
    mb = (b.model ?? {}) as Record<
      string,
      unknown
    >;
  const va = (ma.vocab ?? {}) as Record<string, number>,
    vb = (mb.vocab ?? {}) as Record<
      string,
      number
    >;
  const na = Object.keys(va).length, nb = Object.keys(vb).length;
  if (na !== nb) return `vocabularies of ${na} and ${nb} tokens`;
  for (const [piece, id] of Object.entries(va)) {
    if (vb[piece] !== id) {
      return `token ${JSON.stringify(piece)} is id ${id} in the first, ${
        vb[piece] === undefined ? "absent" : `id ${vb[piece]}`
      } in the second`;
    }
  }
  if (canonical(ma.merges) !== canonical(mb.merges)) return "the BPE merges differ";
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    if (canonical(a[k]) !== canonical(b[k])) return `field ${JSON.stringify(k)} differs`;
  }
  return "the files differ";
}

/**
 * Throws unless every folder in `dirs` (resolved model folders) has the first one's tokenizer.
 * Folders without a tokenizer.json (pre-tokenised data only) match only each other.
 * Returns the first tokenizer.json's sha256, or null when none has one.
 */
export function assertSameTokenizer(dirs: readonly string[]): string | null {
  const files = dirs.map((d) => join(d, "tokenizer.json"));
  const has = files.map((f) => existsSync(f));
  const texts = files.map((f, i) => (has[i] ? readFileSync(f, "utf8") : null));
  for (let i = 1; i < dirs.length; i++) {
    if (has[i] !== has[0]) {
      const [yes, no] = has[0] ? [0, i] : [i, 0];
      throw new TokenizerError(
        `models compared on the same tokens must share a tokenizer: ${
          dirs[yes]
        } has a tokenizer.json, ${dirs[no]} has none`,
      );
    }
    if (!has[0] || texts[i] === texts[0]) continue;
    const a = parse(files[0], texts[0]!), b = parse(files[i], texts[i]!);
    if (canonical(a) === canonical(b)) continue;
    throw new TokenizerError(
      `models compared on the same tokens must share a tokenizer: ${files[0]} and ${
        files[i]
      } differ (${firstDifference(a, b)})`,
    );
  }
  return texts[0] === null ? null : createHash("sha256").update(texts[0]).digest("hex");
}
