/**
 * `--data` for commands that run a model over text (harvesting, live training): the corpus any
 * format openCorpus reads, tokenised by the model's own tokenizer.json and cut into rows of
 * `--context` ids. Pre-tokenised data (.npy, a Parquet ids column) needs no tokenizer: the special
 * ids then come from the model's config.json. One place, so both commands read text alike.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type CorpusFormat, type FileCorpus, openCorpus } from "./corpus.ts";
import { loadTokenizer, type Tokenizer } from "./tokenizer.ts";
import { type CountedTokenRowStream, tokenRows } from "./token_rows.ts";

export interface TextRowsOptions {
  context: number;
  /** "pack" (default, SAELens) or "truncate" (one document per row, dictionary_learning). */
  packing?: "pack" | "truncate";
  /** BOS first in every row; default the tokenizer's own rule (see TokenRowOptions). */
  prependBos?: boolean;
  format?: CorpusFormat;
  field?: string;
  separator?: string;
  /** JSON lines: a field each row carries per position as `segments` (e.g. "domain"). */
  labelField?: string;
}

export interface TextRows {
  rows: CountedTokenRowStream;
  corpus: FileCorpus;
  /** The model's tokenizer; null when the folder has none and the data is pre-tokenised. */
  tokenizer: Tokenizer | null;
  /** Ids `--exclude-special` leaves out. */
  special: ReadonlySet<number>;
}

/** The flags every text-reading command takes, with their help lines. */
export const TEXT_FLAGS = ["context", "packing", "prepend-bos", "format", "field", "separator"];
export const TEXT_FLAGS_HELP =
  `  --data PATH    text: .txt (a file or folder), .jsonl, .jsonl.zst, Parquet (a file or a
                 Hugging Face datasets folder), or pre-tokenised int32 ids (.npy); tokenised by
                 the model folder's tokenizer.json (docs/text.md)
  --context T    token ids per row (default 128)
  --packing M    pack (default: documents concatenated with separators, as SAELens) | truncate
                 (one document per row, cut to T; short ones padded, padding never used)
  --prepend-bos  BOS first in every row (default: as the tokenizer says; GPT-2 and Pythia: no)
  --field NAME   the text (or ids) field of JSON lines and Parquet (default text)
  --separator S  plain text: blank (default: blank lines end documents) | line | file | a marker line
  --format F     text | jsonl | parquet | npy (default: from the extension)`;

type Flags = Record<string, string | true | undefined>;

/** TextRowsOptions from command-line flags; `fail` reports a bad value (a usage error). */
export function textRowsOptions(
  flags: Flags,
  fail: (message: string) => never,
  defaultContext = 128,
): TextRowsOptions {
  const str = (name: string): string | undefined => {
    const v = flags[name];
    if (v === true) fail(`--${name} needs a value`);
    return v as string | undefined;
  };
  const c = str("context");
  const context = c === undefined ? defaultContext : Number(c);
  if (!Number.isSafeInteger(context) || context < 1) {
    fail(`--context must be a positive integer, got ${c}`);
  }
  const packing = str("packing");
  if (packing !== undefined && packing !== "pack" && packing !== "truncate") {
    fail(`--packing must be pack or truncate, got ${packing}`);
  }
  const format = str("format");
  if (format !== undefined && !["text", "jsonl", "parquet", "npy"].includes(format)) {
    fail(`--format must be text, jsonl, parquet or npy, got ${format}`);
  }
  if (flags["prepend-bos"] !== undefined && flags["prepend-bos"] !== true) {
    fail("--prepend-bos takes no value");
  }
  const field = str("field"), separator = str("separator");
  return {
    context,
    ...(packing ? { packing: packing as "pack" | "truncate" } : {}),
    ...(flags["prepend-bos"] === true ? { prependBos: true } : {}),
    ...(format ? { format: format as CorpusFormat } : {}),
    ...(field !== undefined ? { field } : {}),
    ...(separator !== undefined ? { separator } : {}),
  };
}

/** The special ids config.json names (bos/eos/pad), for pre-tokenised data without a tokenizer. */
function configSpecialIds(
  modelDir: string,
): { bos: number | null; eos: number | null; pad: number | null } {
  const path = join(modelDir, "config.json");
  const cfg = existsSync(path) ? JSON.parse(readFileSync(path, "utf8")) : {};
  const first = (v: unknown): number | null => {
    const x = Array.isArray(v) ? v[0] : v;
    return Number.isInteger(x) ? x as number : null;
  };
  return {
    bos: first(cfg.bos_token_id),
    eos: first(cfg.eos_token_id),
    pad: first(cfg.pad_token_id),
  };
}

/**
 * Stands in for a tokenizer when the data is already ids: it knows the special ids and refuses
 * text, so a text document in such a corpus is an error that names the missing tokenizer.json.
 */
function idsOnlyTokenizer(modelDir: string): Tokenizer {
  const { bos, eos, pad } = configSpecialIds(modelDir);
  const refuse = (): never => {
    throw new RangeError(
      `${modelDir} has no tokenizer.json: only pre-tokenised data (ids) can be read for it`,
    );
  };
  return {
    vocabSize: 0,
    bosId: bos,
    eosId: eos,
    padId: pad,
    addBos: false,
    specialIds: new Set([bos, eos, pad].filter((x): x is number => x !== null)),
    encode: refuse,
    decode: refuse,
    piece: refuse,
  };
}

/** Open `data` for the model in `modelDir` (a resolved folder) as token rows. */
export async function openTextRows(
  data: string,
  modelDir: string,
  o: TextRowsOptions,
): Promise<TextRows> {
  const corpus = await openCorpus(data, {
    ...(o.format ? { format: o.format } : {}),
    ...(o.field !== undefined ? { field: o.field } : {}),
    ...(o.separator !== undefined ? { separator: o.separator } : {}),
    ...(o.labelField !== undefined ? { labelField: o.labelField } : {}),
  });
  const hasTokenizer = existsSync(join(modelDir, "tokenizer.json"));
  if (!hasTokenizer && corpus.format !== "npy" && corpus.format !== "parquet") {
    throw new RangeError(
      `--data ${data} is text, but ${modelDir} has no tokenizer.json to tokenise it with (give pre-tokenised ids, .npy, or add the model's tokenizer.json)`,
    );
  }
  const tokenizer = hasTokenizer ? await loadTokenizer(modelDir) : null;
  const tok = tokenizer ?? idsOnlyTokenizer(modelDir);
  const rows = tokenRows(corpus, tok, {
    context: o.context,
    ...(o.packing ? { mode: o.packing } : {}),
    ...(o.prependBos !== undefined ? { prependBos: o.prependBos } : {}),
  });
  return { rows, corpus, tokenizer, special: tok.specialIds };
}
