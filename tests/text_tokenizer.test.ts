// Tokenizers from tokenizer.json: GPT-2 against gpt-3-encoder on the Brown corpus, byte-level
// round trips on hard text, a hand-built SentencePiece-style tokenizer with byte fallback, NFC
// normalisation, special tokens and BOS rules, bad files. (`sae tokenize` is tested in
// text_tokenize_cli.test.ts: loading the CLI loads apache-arrow, whose Symbol.isConcatSpreadable
// puts V8's Array.prototype.concat on its slow path, and gpt-3-encoder concatenates per word.)
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encode as gpt3Encode } from "gpt-3-encoder";
import { loadTokenizer, type Tokenizer, tokenizerFromJson } from "../data/text/tokenizer.ts";
import { tokenSpans } from "../data/text/token_spans.ts";
import { assert, assertEquals, test, withTempDir } from "./harness.ts";
import { expectError } from "./lm_fixtures.ts";
import {
  brownLines,
  byteLevelJson,
  gpt2VocabAndMerges,
  writeByteTokenizer,
  writeGpt2Tokenizer,
} from "./text_fixtures.ts";

const withTemp = (fn: (dir: string) => Promise<void>) => withTempDir("text-tok-", fn);

// One GPT-2 tokenizer for the file (building the 50k-piece vocabulary takes a moment), from the
// folder writeGpt2Tokenizer writes.
const gpt2 = await (async () => {
  const dir = await mkdtemp(join(tmpdir(), "text-gpt2-"));
  try {
    await writeGpt2Tokenizer(dir);
    return await loadTokenizer(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
})();
/** `fn` must throw a message containing every one of `parts`. */
function throwsWith(fn: () => unknown, parts: string[]): void {
  let msg: string | null = null;
  try {
    fn();
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(msg !== null, `expected an error naming ${parts.join(", ")}`);
  for (const p of parts) assert(msg.includes(p), `error ${JSON.stringify(msg)} lacks ${p}`);
}

const ids = (tok: Tokenizer, text: string): number[] => Array.from(tok.encode(text));

test("GPT-2: our ids equal gpt-3-encoder's on 3000 Brown sentences, line by line and whole", () => {
  const lines = brownLines(3000);
  assertEquals(lines.length, 3000);
  assert(lines[0].startsWith("The Fulton County Grand Jury said Friday"), lines[0]);
  let n = 0;
  for (const [i, line] of lines.entries()) {
    const ours = ids(gpt2, line);
    assertEquals(ours, gpt3Encode(line), `line ${i}: ${line}`);
    n += ours.length;
  }
  assert(n > 50_000, `only ${n} tokens`);
  // As running text: newline-joined blocks of 200 lines (gpt-3-encoder's encode is quadratic in
  // the text's length, it concatenates its output word by word; 3000 lines at once take minutes).
  for (let at = 0; at < lines.length; at += 200) {
    const block = lines.slice(at, at + 200).join("\n");
    assertEquals(ids(gpt2, block), gpt3Encode(block), `lines ${at}…${at + 199} as one text`);
  }
  const whole = lines.join("\n");
  assertEquals(gpt2.decode(gpt2.encode(whole)), whole);
});

test("GPT-2: known ids, pieces, special ids and BOS rules from the files", () => {
  assertEquals(ids(gpt2, "Hello world"), [15496, 995]);
  assertEquals(Array.from(gpt2.encode("Hello world"), (i) => gpt2.piece(i)), ["Hello", "Ġworld"]);
  assertEquals(gpt2.vocabSize, 50257);
  assertEquals([gpt2.bosId, gpt2.eosId, gpt2.padId, gpt2.addBos], [50256, 50256, null, false]);
  assertEquals([...gpt2.specialIds], [50256]);
  // The added token is cut out of the text before BPE; gpt-3-encoder would spell it out in pieces.
  assertEquals(ids(gpt2, "a<|endoftext|>b"), [64, 50256, 65]);
  assert(gpt3Encode("<|endoftext|>").length > 1, "gpt-3-encoder splits <|endoftext|>");
  assertEquals(gpt2.decode([64, 50256, 65]), "a<|endoftext|>b");
  assertEquals(gpt2.decode([]), "");
  assertEquals(ids(gpt2, ""), []);
});

test("byte-level BPE: decode(encode(s)) = s for emoji, ZWJ sequences, CJK, combining marks", () => {
  const texts = [
    "😀 family: 👨‍👩‍👧‍👦, flag: 🏳️‍🌈, skin tone: 👍🏽",
    "日本語のテキスト、中文文本，한국어 텍스트",
    "e\u0301 n\u0303 a\u030a\u0323 — Zalgo: Z\u0351\u036b\u0343a\u0310l\u0356g\u0349o",
    "tabs\tand\r\nnewlines\n\n  many   spaces  ",
    "\u0000\u0001 control \u007f and U+FFFF \uffff, astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
  ];
  for (const s of texts) {
    const enc = gpt2.encode(s);
    assertEquals(gpt2.decode(enc), s, JSON.stringify(s));
    // Each character's UTF-8 bytes are spread over byte-level pieces: every id is a real piece.
    for (const id of enc) assert(id >= 0 && id < 50257, `id ${id}`);
  }
  // A ZWJ emoji is many bytes: more than one token, all recovered.
  assert(gpt2.encode("👨‍👩‍👧‍👦").length > 1);
});

test("byte-level BPE: a lone surrogate comes back as U+FFFD, as UTF-8 encoding makes it", () => {
  // A lone surrogate has no UTF-8 form; TextEncoder (and so the byte-level pre-tokenizer) writes
  // EF BF BD, the bytes of U+FFFD. So it encodes exactly as U+FFFD does and decodes to U+FFFD.
  for (
    const [bad, good] of [["a\ud800b", "a\ufffdb"], ["x\udfff", "x\ufffd"], [
      "\udc00\ud83d",
      "\ufffd\ufffd",
    ]]
  ) {
    assertEquals(ids(gpt2, bad), ids(gpt2, good), JSON.stringify(bad));
    assertEquals(gpt2.decode(gpt2.encode(bad)), good);
  }
  // A well-formed pair is one astral character, untouched.
  assertEquals(gpt2.decode(gpt2.encode("\ud83d\ude00")), "😀");
});

/**
 * A Llama-style SentencePiece BPE tokenizer, small enough to derive ids by hand:
 *   0 <unk>, 1 <s>, 2 </s>, 3…258 the byte tokens <0x00>…<0xFF> (byte b has id 3 + b),
 *   259 ▁, 260 h, 261 e, 262 l, 263 o, 264 w, 265 r, 266 d,
 *   267 ▁▁, 268 ▁h, 269 ll, 270 ▁he, 271 llo, 272 ▁hello, 273 ▁w, 274 or, 275 ▁wor, 276 ld,
 *   277 ▁world.
 * Merges (rank order) build exactly those pieces; "▁ ▁" ranks first, which tells whether words are
 * split before each ▁ (Metaspace split) or not (Llama 2's normaliser form).
 */
function llamaJson(form: "normalizer" | "metaspace" | "metaspace-split"): Record<string, unknown> {
  const vocab: Record<string, number> = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  for (let b = 0; b < 256; b++) {
    vocab[`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`] = 3 + b;
  }
  const pieces = ["▁", "h", "e", "l", "o", "w", "r", "d", "▁▁", "▁h", "ll", "▁he", "llo"];
  pieces.push("▁hello", "▁w", "or", "▁wor", "ld", "▁world");
  pieces.forEach((p, i) => vocab[p] = 259 + i);
  const merges = [
    ["▁", "▁"],
    ["▁", "h"],
    ["l", "l"],
    ["▁h", "e"],
    ["ll", "o"],
    ["▁he", "llo"],
    ["▁", "w"],
    ["o", "r"],
    ["▁w", "or"],
    ["l", "d"],
    ["▁wor", "ld"],
  ];
  const special = (id: number, content: string) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  const metaspace = { type: "Metaspace", replacement: "▁", prepend_scheme: "first" };
  return {
    version: "1.0",
    added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
    normalizer: form === "normalizer"
      ? {
        type: "Sequence",
        normalizers: [
          { type: "Prepend", prepend: "▁" },
          { type: "Replace", pattern: { String: " " }, content: "▁" },
        ],
      }
      : null,
    pre_tokenizer: form === "normalizer"
      ? null
      : { ...metaspace, ...(form === "metaspace" ? { split: false } : {}) },
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: "<s>", type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: "<s>", type_id: 1 } },
        { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
    decoder: form === "normalizer"
      ? {
        type: "Sequence",
        decoders: [
          { type: "Replace", pattern: { String: "▁" }, content: " " },
          { type: "ByteFallback" },
          { type: "Fuse" },
          { type: "Strip", content: " ", start: 1, stop: 0 },
        ],
      }
      : {
        type: "Sequence",
        decoders: [{ type: "ByteFallback" }, { type: "Fuse" }, metaspace],
      },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: "<unk>",
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

test("SentencePiece-style BPE with byte fallback: hand-derived ids, BOS from the template", () => {
  for (const form of ["normalizer", "metaspace"] as const) {
    const tok = tokenizerFromJson(llamaJson(form));
    // "hello world" → "▁hello▁world" (▁ prepended, spaces → ▁). Merges by rank: ▁h, ll, ▁he,
    // llo, ▁hello; then ▁w, or, ▁wor, ld, ▁world.
    assertEquals(ids(tok, "hello world"), [272, 277], form);
    // "hé!" → "▁hé!": ▁h merges; é and ! are not pieces, so their UTF-8 bytes C3 A9 and 21
    // become <0xC3> <0xA9> <0x21> = 3 + 0xC3, 3 + 0xA9, 3 + 0x21.
    assertEquals(ids(tok, "hé!"), [268, 3 + 0xc3, 3 + 0xa9, 3 + 0x21], form);
    // An emoji: ▁ alone, then its four bytes F0 9F 98 80.
    assertEquals(ids(tok, "😀"), [259, 3 + 0xf0, 3 + 0x9f, 3 + 0x98, 3 + 0x80], form);
    // No split at ▁: "▁hello▁▁world" merges "▁ ▁" (rank 0) before "▁ w", leaving w or ld.
    assertEquals(ids(tok, "hello  world"), [272, 267, 264, 274, 276], form);
    for (const s of ["hello world", "hé!", "😀 ünïcödé 日本", "hello  world"]) {
      assertEquals(tok.decode(tok.encode(s)), s, `${form}: ${s}`);
    }
    // BOS from the TemplateProcessing post-processor (no tokenizer_config here).
    assertEquals([tok.bosId, tok.addBos, [...tok.specialIds]], [1, true, [0, 1, 2]], form);
    assertEquals(tok.piece(3 + 0x0a), "<0x0A>");
    // Rendered from bytes: byte-fallback pieces are their byte, ▁ a space (kept at the start).
    assertEquals(tokenSpans(tok, tok.encode("hé! 😀")).text, " hé! 😀", form);
  }
  // Metaspace with split (the Rust default): each ▁ starts a word, "▁hello", "▁", "▁world".
  const split = tokenizerFromJson(llamaJson("metaspace-split"));
  assertEquals(ids(split, "hello  world"), [272, 259, 277]);
  assertEquals(split.decode(split.encode("hello  world")), "hello  world");
});

test("BOS/EOS/pad: tokenizer_config and config.json decide, add_bos_token wins", () => {
  const json = llamaJson("normalizer");
  const off = tokenizerFromJson(json, { add_bos_token: false, eos_token: "</s>" });
  assertEquals([off.bosId, off.eosId, off.addBos], [1, 2, false]);
  const named = tokenizerFromJson(json, {
    bos_token: { content: "<s>", special: true },
    pad_token: "<unk>",
    add_bos_token: true,
  }, { eos_token_id: [2, 0] });
  assertEquals([named.bosId, named.eosId, named.padId, named.addBos], [1, 2, 0, true]);
  // No template, no config: nothing; config.json alone gives the ids but never adds BOS.
  const { vocab, merges } = gpt2VocabAndMerges();
  const plain = byteLevelJson(vocab, merges, [{
    id: 50256,
    content: "<|endoftext|>",
    special: true,
  }]);
  const bare = tokenizerFromJson(plain);
  assertEquals([bare.bosId, bare.eosId, bare.padId, bare.addBos], [null, null, null, false]);
  const cfg = tokenizerFromJson(plain, undefined, { bos_token_id: 50256, eos_token_id: 50256 });
  assertEquals([cfg.bosId, cfg.eosId, cfg.addBos], [50256, 50256, false]);
});

test("Pythia-style: NFC normaliser (decomposed é = composed é), <|endoftext|> and <|padding|>", () => {
  const { vocab, merges } = gpt2VocabAndMerges();
  const added = [
    { id: 50256, content: "<|endoftext|>", special: true },
    { id: 50257, content: "<|padding|>", special: true },
  ];
  const nfc = tokenizerFromJson(
    byteLevelJson(vocab, merges, added, { normalizer: { type: "NFC" } }),
    {
      bos_token: "<|endoftext|>",
      eos_token: "<|endoftext|>",
    },
  );
  const raw = tokenizerFromJson(byteLevelJson(vocab, merges, added));
  const composed = "caf\u00e9 na\u00efve", decomposed = "cafe\u0301 nai\u0308ve";
  assertEquals(ids(nfc, decomposed), ids(nfc, composed));
  assertEquals(ids(nfc, composed), ids(raw, composed));
  // Without the normaliser the combining marks are their own bytes: different ids.
  assert(JSON.stringify(ids(raw, decomposed)) !== JSON.stringify(ids(raw, composed)));
  assertEquals(nfc.vocabSize, 50258);
  assertEquals([...nfc.specialIds], [50256, 50257]);
  assertEquals([nfc.bosId, nfc.eosId, nfc.addBos], [50256, 50256, false]);
  assertEquals(ids(nfc, "x<|padding|><|endoftext|>"), [87, 50257, 50256]);
  assertEquals(nfc.piece(50257), "<|padding|>");
});

test("writeByteTokenizer: ids below vocabSize, <unk> for bytes left out, optional BOS", async () => {
  await withTemp(async (dir) => {
    await writeByteTokenizer(dir, { vocabSize: 64 });
    const tok = await loadTokenizer(dir);
    assertEquals([tok.vocabSize, tok.bosId, tok.eosId, tok.addBos], [64, 0, 0, false]);
    assertEquals([...tok.specialIds], [0, 1]);
    const text = "The cat sat.\nA dog, too!";
    const enc = tok.encode(text);
    assertEquals(enc.length, [...text].length, "one id per byte (no merges)");
    for (const id of enc) assert(id > 1 && id < 64, `id ${id}`);
    assertEquals(tok.decode(enc), text);
    assertEquals(ids(tok, "a é"), [2 + 2, 2, 1, 1], "é: two bytes not in 64 ids → <unk> twice");
    assertEquals(ids(tok, "<|endoftext|>a"), [0, 4]);
    await writeByteTokenizer(join(dir, "bos"), { vocabSize: 258, addBos: true });
    const full = await loadTokenizer(join(dir, "bos"));
    assertEquals([full.vocabSize, full.addBos, full.bosId], [258, true, 0]);
    const all = "ünï 😀 \u0000";
    assertEquals(full.decode(full.encode(all)), all);
  });
});

test("bad input: a missing folder or file, broken JSON, unsupported model type, bad fields", async () => {
  await withTemp(async (dir) => {
    await expectError(() => loadTokenizer(join(dir, "nope")), ["nope", "no such folder"]);
    await expectError(() => loadTokenizer(dir), [dir, "no tokenizer.json"]);
    await writeFile(join(dir, "tokenizer.json"), '{"model": {');
    await expectError(() => loadTokenizer(dir), [join(dir, "tokenizer.json"), "not valid JSON"]);
    await writeFile(
      join(dir, "tokenizer.json"),
      JSON.stringify({ model: { type: "Unigram", vocab: [["a", 0]] } }),
    );
    await expectError(() => loadTokenizer(dir), [
      join(dir, "tokenizer.json"),
      'model type "Unigram" is not supported',
      "supported: BPE",
    ]);
    await writeFile(join(dir, "tokenizer.json"), JSON.stringify(llamaJson("normalizer")));
    await writeFile(join(dir, "tokenizer_config.json"), "[1]");
    await expectError(() => loadTokenizer(dir), [
      "tokenizer_config.json",
      "expected a JSON object",
    ]);
    await writeFile(join(dir, "tokenizer_config.json"), JSON.stringify({ bos_token: "<bos>" }));
    await expectError(() => loadTokenizer(dir), [
      "tokenizer_config.json",
      'bos_token "<bos>" is not in the vocabulary',
    ]);
  });
  const json = llamaJson("normalizer");
  throwsWith(
    () => tokenizerFromJson({ ...json, model: { ...(json.model as object), merges: [["a"]] } }),
    ["tokenizer.json", "model.merges[0]"],
  );
  throwsWith(() => tokenizerFromJson(json).decode([300]), ["token id 300", "0…277"]);
  throwsWith(
    () => tokenizerFromJson({ ...json, normalizer: { type: "Lowercase2" } }),
    ["tokenizer.json", "Lowercase2"],
  );
});

test("loadTokenizer: a repo id from the Hugging Face cache, offline; a snapshot without one", async () => {
  await withTemp(async (cache) => {
    const commit = "0123456789abcdef0123456789abcdef01234567";
    const repo = join(cache, "models--org--tiny");
    const snap = join(repo, "snapshots", commit);
    await writeByteTokenizer(snap, { vocabSize: 40 });
    await writeFile(join(snap, "config.json"), JSON.stringify({ bos_token_id: 0 }));
    await writeFile(join(snap, "model.safetensors"), ""); // the cache lookup wants the weights
    await mkdir(join(repo, "refs"), { recursive: true });
    await writeFile(join(repo, "refs", "main"), commit);
    const tok = await loadTokenizer("org/tiny", { cacheDir: cache, offline: true });
    assertEquals([tok.vocabSize, tok.bosId], [40, 0]);
    assertEquals(tok.decode(tok.encode("a b")), "a b");
    await rm(join(snap, "tokenizer.json"));
    await expectError(() => loadTokenizer("org/tiny", { cacheDir: cache, offline: true }), [
      snap,
      "no tokenizer.json",
      "huggingface-cli download org/tiny tokenizer.json",
    ]);
  });
});
