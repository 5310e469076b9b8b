/**
 * A trained byte-level BPE (bpe_train.ts) as Hugging Face files: `tokenizer.json` laid out as GPT-2's
 * (BPE model, ByteLevel pre-tokenizer, post-processor and decoder with add_prefix_space false, the
 * special tokens as added tokens) and a `tokenizer_config.json` naming BOS/EOS, both written
 * atomically. loadTokenizer (tokenizer.ts) reads them back; so do transformers and tokenizers.
 */
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic, writeJsonAtomic } from "../atomic.ts";
import type { BpeResult } from "./bpe_train.ts";

export interface BpeTokenizerOptions {
  /** BOS and EOS token (special tokens of the result); default `<|endoftext|>` for both, as GPT-2. */
  bos?: string;
  eos?: string;
  /** Whether the model expects BOS before each sequence (default false, as GPT-2). */
  addBos?: boolean;
  /** tokenizer_config.json's model_max_length, the context the model is trained for (optional). */
  modelMaxLength?: number;
}

function special(result: BpeResult, name: string, token: string): number {
  const t = result.specialTokens.find((s) => s.content === token);
  if (t === undefined) {
    throw new RangeError(
      `bpeTokenizerJson: ${name} ${JSON.stringify(token)} is not one of the special tokens (${
        result.specialTokens.map((s) => JSON.stringify(s.content)).join(", ") || "none"
      })`,
    );
  }
  return t.id;
}

/** The tokenizer.json object of a trained BPE. */
export function bpeTokenizerJson(
  result: BpeResult,
  opts: BpeTokenizerOptions = {},
): Record<string, unknown> {
  const byteLevel = { add_prefix_space: false, trim_offsets: true, use_regex: true };
  const bos = opts.bos ?? "<|endoftext|>";
  const bosId = special(result, "bos", bos);
  special(result, "eos", opts.eos ?? "<|endoftext|>");
  // With addBos a template puts BOS first (as Llama's does <s>); else GPT-2's ByteLevel one.
  const template = { SpecialToken: { id: bos, type_id: 0 } };
  const postProcessor = opts.addBos
    ? {
      type: "TemplateProcessing",
      single: [template, { Sequence: { id: "A", type_id: 0 } }],
      pair: [template, { Sequence: { id: "A", type_id: 0 } }, template, {
        Sequence: { id: "B", type_id: 1 },
      }],
      special_tokens: { [bos]: { id: bos, ids: [bosId], tokens: [bos] } },
    }
    : { type: "ByteLevel", ...byteLevel };
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: result.specialTokens.map((t) => ({
      id: t.id,
      content: t.content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", ...byteLevel },
    post_processor: postProcessor,
    decoder: { type: "ByteLevel", ...byteLevel },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      vocab: result.vocab,
      // "a b" strings: every tokenizers version reads them (byte-level pieces hold no space).
      merges: result.merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

/** tokenizer_config.json: the BOS/EOS names, whether BOS is added, and the fast class to load. */
export function bpeTokenizerConfig(
  result: BpeResult,
  opts: BpeTokenizerOptions = {},
): Record<string, unknown> {
  const bos = opts.bos ?? "<|endoftext|>", eos = opts.eos ?? "<|endoftext|>";
  special(result, "bos", bos);
  special(result, "eos", eos);
  return {
    tokenizer_class: "PreTrainedTokenizerFast",
    bos_token: bos,
    eos_token: eos,
    add_bos_token: opts.addBos ?? false,
    ...(opts.modelMaxLength === undefined ? {} : { model_max_length: opts.modelMaxLength }),
  };
}

/** Write `dir/tokenizer.json` and `dir/tokenizer_config.json` (atomically; the folder is made). */
export async function writeBpeTokenizer(
  dir: string,
  result: BpeResult,
  opts: BpeTokenizerOptions = {},
): Promise<void> {
  const json = bpeTokenizerJson(result, opts), config = bpeTokenizerConfig(result, opts);
  await mkdir(dir, { recursive: true });
  await writeFileAtomic(join(dir, "tokenizer.json"), JSON.stringify(json));
  await writeJsonAtomic(join(dir, "tokenizer_config.json"), config);
}
