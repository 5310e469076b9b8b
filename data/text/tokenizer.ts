/**
 * A tokenizer as the rest of the library sees it: text to ids and back, and which ids are special.
 * Loaded from a Hugging Face `tokenizer.json` (+ `tokenizer_config.json`, + the model's
 * `config.json` for BOS/EOS ids), encoded by @huggingface/tokenizers (a pure-JS implementation of
 * that format); this file checks the files, picks the special ids and adapts the one pre-tokenizer
 * setting that library does not implement (Metaspace `split`).
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { type HubOptions, resolveModel } from "../lm/hub.ts";
import { byteLevelBytes } from "./byte_level.ts";

export interface Tokenizer {
  /** Ids the tokenizer can produce (the model's embedding may have more rows: padding). */
  readonly vocabSize: number;
  /** Beginning/end-of-sequence and padding ids, null where the tokenizer has none. */
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly padId: number | null;
  /** Whether the model expects BOS before each sequence (Llama, Gemma: yes; GPT-2, Pythia: no). */
  readonly addBos: boolean;
  /** Ids of added special tokens (BOS, EOS, padding, `<|endoftext|>`, …): excluded on request. */
  readonly specialIds: ReadonlySet<number>;
  /** The ids of `text`, with no special tokens added. */
  encode(text: string): Int32Array;
  /** The text of `ids` (special tokens included as their text). */
  decode(ids: ArrayLike<number>): string;
  /** One id's piece as the vocabulary spells it (`Ġthe`, `▁the`, `<0x0A>`). */
  piece(id: number): string;
  /**
   * The bytes one id adds to decoded text: a byte-level piece's bytes, a byte-fallback piece's
   * byte, otherwise the piece's UTF-8 (Metaspace's `▁` as a space). A piece may hold part of a
   * character, so a window's text is the decoding of its tokens' bytes joined (token_spans.ts).
   * Optional: tokenizers without it are rendered token by token from `decode`.
   */
  bytes?(id: number): Uint8Array;
}

/** A tokenizer file that is missing, unreadable or not what we support; the message says which. */
export class TokenizerError extends Error {
  override name = "TokenizerError";
}

/** The tokenizer.json model types we accept (others: T5's Unigram, BERT's WordPiece, refused). */
export const SUPPORTED_MODEL_TYPES = ["BPE"] as const;

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json =>
  v !== null && typeof v === "object" && !Array.isArray(v);

/** Where the parts came from, for error messages. */
export interface TokenizerFiles {
  /** Label of tokenizer.json (a path); default "tokenizer.json". */
  tokenizerJson?: string;
  tokenizerConfig?: string;
  modelConfig?: string;
}

/**
 * A tokenizer from the parsed contents of `tokenizer.json` and, when given, `tokenizer_config.json`
 * and the model's `config.json`. Special ids:
 *  - bosId: tokenizer_config `bos_token`, else the first special token of the post-processor's
 *    TemplateProcessing `single` template, else config.json `bos_token_id`;
 *  - eosId / padId: tokenizer_config `eos_token` / `pad_token`, else config.json
 *    `eos_token_id` (the first if a list) / `pad_token_id`;
 *  - addBos: tokenizer_config `add_bos_token` when it is a boolean (transformers rebuilds the
 *    post-processor from it), else whether the template starts with a special token;
 *  - specialIds: the `added_tokens` marked `special`.
 */
export function tokenizerFromJson(
  tokenizerJson: unknown,
  tokenizerConfig?: unknown,
  modelConfig?: unknown,
  files: TokenizerFiles = {},
): Tokenizer {
  const where = files.tokenizerJson ?? "tokenizer.json";
  const cfgWhere = files.tokenizerConfig ?? "tokenizer_config.json";
  const modelWhere = files.modelConfig ?? "config.json";
  if (!isObject(tokenizerJson)) throw new TokenizerError(`${where}: expected a JSON object`);
  if (tokenizerConfig !== undefined && !isObject(tokenizerConfig)) {
    throw new TokenizerError(`${cfgWhere}: expected a JSON object`);
  }
  if (modelConfig !== undefined && !isObject(modelConfig)) {
    throw new TokenizerError(`${modelWhere}: expected a JSON object`);
  }
  const model = checkModel(tokenizerJson.model, where);
  const added = checkAddedTokens(tokenizerJson.added_tokens, where);

  // Every id the files name: the model's vocabulary and the added tokens.
  const pieces: string[] = [];
  const ids = new Map<string, number>();
  for (const [p, id] of Object.entries(model.vocab as Record<string, number>)) {
    pieces[id] = p;
    ids.set(p, id);
  }
  for (const t of added) {
    pieces[t.id] = t.content;
    ids.set(t.content, t.id);
  }
  const vocabSize = pieces.length;
  const specialIds = new Set(added.filter((t) => t.special).map((t) => t.id));

  const tcfg = (tokenizerConfig ?? {}) as Json;
  const mcfg = (modelConfig ?? {}) as Json;
  const named = (field: string): number | null => {
    const v = tcfg[field];
    const name = typeof v === "string" ? v : isObject(v) ? v.content : v;
    if (name === undefined || name === null) return null;
    if (typeof name !== "string") {
      throw new TokenizerError(`${cfgWhere}: ${field} must be a string, got ${JSON.stringify(v)}`);
    }
    const id = ids.get(name);
    if (id === undefined) {
      throw new TokenizerError(
        `${cfgWhere}: ${field} ${JSON.stringify(name)} is not in the vocabulary of ${where}`,
      );
    }
    return id;
  };
  const configId = (field: string): number | null => {
    let v = mcfg[field];
    if (Array.isArray(v)) v = v[0];
    if (v === undefined || v === null) return null;
    if (!Number.isInteger(v) || (v as number) < 0) {
      throw new TokenizerError(
        `${modelWhere}: ${field} must be a non-negative integer, got ${
          JSON.stringify(mcfg[field])
        }`,
      );
    }
    return v as number;
  };
  const template = templateBos(tokenizerJson.post_processor, where);
  const bosId = named("bos_token") ?? template ?? configId("bos_token_id");
  const eosId = named("eos_token") ?? configId("eos_token_id");
  const padId = named("pad_token") ?? configId("pad_token_id");
  const flag = tcfg.add_bos_token;
  if (flag !== undefined && flag !== null && typeof flag !== "boolean") {
    throw new TokenizerError(`${cfgWhere}: add_bos_token must be true or false, got ${flag}`);
  }
  const addBos = typeof flag === "boolean" ? flag : template !== null;
  if (addBos && bosId === null) {
    throw new TokenizerError(
      `${cfgWhere}: add_bos_token is true but no BOS token is named (bos_token, the post-processor template, or bos_token_id in ${modelWhere})`,
    );
  }

  let hf: HfTokenizer;
  try {
    // The library's only uses of tokenizer_config change the text (remove_space, lowercasing,
    // decode clean-up) beyond what tokenizer.json says; give it none, so encoding is the file's.
    hf = new HfTokenizer(adapt(tokenizerJson), { clean_up_tokenization_spaces: false });
  } catch (e) {
    throw new TokenizerError(`${where}: ${(e as Error).message}`);
  }

  const piece = (id: number): string => {
    const p = Number.isInteger(id) ? pieces[id] : undefined;
    if (p === undefined) {
      throw new TokenizerError(`token id ${id} is not in the vocabulary (0…${vocabSize - 1})`);
    }
    return p;
  };
  const decoders = decoderTypes(tokenizerJson.decoder);
  const addedIds = new Set(added.map((t) => t.id));
  const utf8 = new TextEncoder();
  const bytes = (id: number): Uint8Array => {
    const p = piece(id);
    // Added tokens are stored as their text, not in the byte alphabet.
    if (addedIds.has(id)) return utf8.encode(p);
    if (decoders.byteLevel) return byteLevelBytes(p) ?? utf8.encode(p);
    const fallback = decoders.byteFallback && /^<0x([0-9A-Fa-f]{2})>$/.exec(p);
    if (fallback) return Uint8Array.of(parseInt(fallback[1], 16));
    return utf8.encode(decoders.space ? p.replaceAll(decoders.space, " ") : p);
  };
  return {
    vocabSize,
    bosId,
    eosId,
    padId,
    addBos,
    specialIds,
    encode(text: string): Int32Array {
      const out = hf.encode(text, { add_special_tokens: false }).ids;
      const res = new Int32Array(out.length);
      for (let i = 0; i < out.length; i++) {
        const id = out[i];
        // A piece missing from the vocabulary with no unknown token to stand for it.
        if (typeof id !== "number") {
          throw new TokenizerError(
            `${where}: the text ${
              JSON.stringify(text.slice(0, 40))
            } gives a piece that is not in the vocabulary, and the model has no usable unk_token`,
          );
        }
        res[i] = id;
      }
      return res;
    },
    decode(idList: ArrayLike<number>): string {
      if (idList.length === 0) return "";
      const arr = Array.from(idList);
      for (const id of arr) piece(id);
      return hf.decode(arr, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    },
    piece,
    bytes,
  };
}

/** What the decoder does to pieces: ByteLevel, ByteFallback, and which character stands for a space. */
function decoderTypes(dec: unknown): { byteLevel: boolean; byteFallback: boolean; space: string } {
  const out = { byteLevel: false, byteFallback: false, space: "" };
  const visit = (d: unknown) => {
    if (!isObject(d)) return;
    if (d.type === "Sequence" && Array.isArray(d.decoders)) d.decoders.forEach(visit);
    if (d.type === "ByteLevel") out.byteLevel = true;
    if (d.type === "ByteFallback") out.byteFallback = true;
    if (d.type === "Metaspace") {
      out.space = typeof d.replacement === "string" ? d.replacement : "\u2581";
    }
    // Llama's decoder: Replace "▁" → " ".
    const pat = isObject(d.pattern) ? d.pattern.String : undefined;
    if (d.type === "Replace" && d.content === " " && typeof pat === "string") out.space = pat;
  };
  visit(dec);
  return out;
}

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
}

function checkModel(model: unknown, where: string): Json {
  if (!isObject(model)) throw new TokenizerError(`${where}: no "model" object`);
  // Files from older tokenizers versions may leave out a BPE model's type.
  const type = model.type ?? (Array.isArray(model.merges) ? "BPE" : undefined);
  if (!(SUPPORTED_MODEL_TYPES as readonly unknown[]).includes(type)) {
    throw new TokenizerError(
      `${where}: model type ${JSON.stringify(type)} is not supported; supported: ${
        SUPPORTED_MODEL_TYPES.join(", ")
      } (byte-level as GPT-2/Pythia, or SentencePiece-style with byte_fallback as Llama/Gemma)`,
    );
  }
  if (!isObject(model.vocab)) {
    throw new TokenizerError(`${where}: model.vocab must be an object of piece → id`);
  }
  for (const [p, id] of Object.entries(model.vocab)) {
    if (!Number.isInteger(id) || (id as number) < 0) {
      throw new TokenizerError(
        `${where}: model.vocab[${JSON.stringify(p)}] must be a non-negative integer, got ${
          JSON.stringify(id)
        }`,
      );
    }
  }
  if (!Array.isArray(model.merges)) {
    throw new TokenizerError(`${where}: model.merges must be a list of merges`);
  }
  model.merges.forEach((m, i) => {
    const ok = typeof m === "string"
      ? m.split(" ").length === 2
      : Array.isArray(m) && m.length === 2 && m.every((s) => typeof s === "string");
    if (!ok) {
      throw new TokenizerError(
        `${where}: model.merges[${i}] must be "a b" or ["a", "b"], got ${JSON.stringify(m)}`,
      );
    }
  });
  return model;
}

function checkAddedTokens(list: unknown, where: string): AddedToken[] {
  if (list === undefined || list === null) return [];
  if (!Array.isArray(list)) throw new TokenizerError(`${where}: added_tokens must be a list`);
  return list.map((t, i) => {
    if (
      !isObject(t) || !Number.isInteger(t.id) || (t.id as number) < 0 ||
      typeof t.content !== "string"
    ) {
      throw new TokenizerError(
        `${where}: added_tokens[${i}] needs an integer id and a string content, got ${
          JSON.stringify(t)
        }`,
      );
    }
    return { id: t.id as number, content: t.content, special: t.special === true };
  });
}

/**
 * The id a TemplateProcessing `single` template puts before the text ($A), or null. Found in the
 * post-processor itself or inside a Sequence (Llama 3: ByteLevel then TemplateProcessing).
 */
function templateBos(pp: unknown, where: string): number | null {
  if (!isObject(pp)) return null;
  if (pp.type === "Sequence" && Array.isArray(pp.processors)) {
    for (const p of pp.processors) {
      const id = templateBos(p, where);
      if (id !== null) return id;
    }
    return null;
  }
  if (pp.type !== "TemplateProcessing" || !Array.isArray(pp.single)) return null;
  const first = pp.single[0];
  if (!isObject(first) || !isObject(first.SpecialToken)) return null;
  const name = first.SpecialToken.id;
  const entry = isObject(pp.special_tokens) && typeof name === "string"
    ? pp.special_tokens[name]
    : undefined;
  const id = isObject(entry) && Array.isArray(entry.ids) ? entry.ids[0] : undefined;
  if (!Number.isInteger(id)) {
    throw new TokenizerError(
      `${where}: post_processor template starts with special token ${
        JSON.stringify(name)
      } but special_tokens gives it no id`,
    );
  }
  return id as number;
}

/**
 * The tokenizer.json the library can run as the Rust tokenizers would: every top-level part present
 * (it requires the keys), and a Metaspace pre-tokenizer with `split` (true unless said otherwise)
 * followed by a split before each `▁`, which the library's Metaspace does not do.
 */
function adapt(json: Json): Json {
  const out: Json = {
    normalizer: null,
    pre_tokenizer: null,
    post_processor: null,
    decoder: null,
    added_tokens: [],
    ...json,
  };
  out.pre_tokenizer = splitMetaspace(out.pre_tokenizer);
  return out;
}

function splitMetaspace(pt: unknown): unknown {
  if (!isObject(pt)) return pt;
  if (pt.type === "Sequence" && Array.isArray(pt.pretokenizers)) {
    return { ...pt, pretokenizers: pt.pretokenizers.map(splitMetaspace) };
  }
  if (pt.type !== "Metaspace" || pt.split === false) return pt;
  const r = typeof pt.replacement === "string" ? pt.replacement : "\u2581";
  const e = r.replace(/[\\^$.*+?()[\]{}|-]/g, "\\$&");
  // Rust splits with MergedWithNext: each `▁` starts a new word ("▁a▁▁b" → "▁a", "▁", "▁b").
  return {
    type: "Sequence",
    pretokenizers: [
      { ...pt, split: false },
      {
        type: "Split",
        pattern: { Regex: `${e}[^${e}]*|[^${e}]+` },
        behavior: "Isolated",
        invert: false,
      },
    ],
  };
}

/** Options for loadTokenizer: where to look for a repo id (as loadModel). */
export type LoadTokenizerOptions = HubOptions;

/**
 * The tokenizer of a model folder or Hugging Face repo id (resolved in the cache, or downloaded
 * with the model, exactly as loadModel does): tokenizer.json, with tokenizer_config.json and
 * config.json when the folder has them.
 */
export async function loadTokenizer(
  folderOrRepoId: string,
  opts: LoadTokenizerOptions = {},
): Promise<Tokenizer> {
  const dir = await resolveModel(folderOrRepoId, opts);
  const path = join(dir, "tokenizer.json");
  if (!existsSync(path)) {
    throw new TokenizerError(
      `${dir}: no tokenizer.json (the folder must hold the model's Hugging Face tokenizer.json${
        dir === folderOrRepoId
          ? ""
          : `; fetch it into the cache, e.g. \`huggingface-cli download ${
            folderOrRepoId.split("@")[0]
          } tokenizer.json tokenizer_config.json\``
      })`,
    );
  }
  const read = (file: string, required: boolean): unknown => {
    const p = join(dir, file);
    if (!required && !existsSync(p)) return undefined;
    let text: string;
    try {
      text = readFileSync(p, "utf8");
    } catch (e) {
      throw new TokenizerError(`${p}: cannot read: ${(e as Error).message}`);
    }
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new TokenizerError(`${p}: not valid JSON: ${(e as Error).message}`);
    }
  };
  return tokenizerFromJson(
    read("tokenizer.json", true),
    read("tokenizer_config.json", false),
    read("config.json", false),
    {
      tokenizerJson: path,
      tokenizerConfig: join(dir, "tokenizer_config.json"),
      modelConfig: join(dir, "config.json"),
    },
  );
}
