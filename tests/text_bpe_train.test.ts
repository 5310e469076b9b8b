// The byte-level BPE trainer: the same merges as a naive trainer that recounts every pair at each
// step (random corpora with ties and runs of one character), hand-worked examples, the written
// tokenizer.json read back by loadTokenizer (round trips, training words, ids), bad input, and
// `sae lm tokenizer`; and HF tokenizers' own trainer's merges on a mixed corpus (tests/golden/bpe_hf,
// written by the Rust library through its npm binding), and the word table and merges of HF's
// trainer unit test (trainer.rs `test_train`).
import fc from "fast-check";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { readdirSync, readFileSync } from "node:fs";
import { BPE_HELP } from "../data/text/bpe_command.ts";
import { bpeTokenizerJson, writeBpeTokenizer } from "../data/text/bpe_json.ts";
import { type BpeResult, BpeTrainError, trainBpe, trainBpeCounts } from "../data/text/bpe_train.ts";
import { countDocuments } from "../data/text/bpe_words.ts";
import {
  BYTE_CHARS,
  BYTE_IDS,
  BYTE_PIECES,
  byteLevel,
  fromByteLevel,
} from "../data/text/byte_level.ts";
import { loadTokenizer, tokenizerFromJson } from "../data/text/tokenizer.ts";
import { runCli } from "./cli_run.ts";
import { assert, assertEquals, assertThrows, test, withTempDir } from "./harness.ts";
import { brownLines, byteChars, gpt2VocabAndMerges } from "./text_fixtures.ts";

const withTemp = (fn: (dir: string) => Promise<void>) => withTempDir("text-bpe-", fn);

// The byte pieces and their ids from GPT-2's own vocabulary (ids 0…255 are its bytes).
const ALPHABET = (() => {
  const { vocab } = gpt2VocabAndMerges();
  const out: string[] = [];
  for (const [p, id] of Object.entries(vocab)) if (id < 256) out[id] = p;
  return out;
})();
const spell = (word: string): string[] =>
  Array.from(new TextEncoder().encode(word), (b) => byteChars()[b]);

/**
 * The reference: at each step count every adjacent pair of every word (× the word's count, every
 * position, overlaps included), merge the most frequent, ties to the smallest (left id, right id),
 * left to right in every word. Quadratic, and obviously so.
 */
function naiveBpe(
  counts: Map<string, number>,
  vocabSize: number,
  minFrequency = 0,
  specials = ["<|endoftext|>"],
): { merges: [string, string][]; pieces: string[] } {
  const pieces = [...ALPHABET];
  const words = [...counts].map(([w, c]) => ({ ids: spell(w).map((p) => pieces.indexOf(p)), c }));
  const merges: [string, string][] = [];
  while (pieces.length < vocabSize - specials.length) {
    const pairs = new Map<string, { a: number; b: number; n: number }>();
    for (const { ids, c } of words) {
      for (let i = 0; i + 1 < ids.length; i++) {
        const k = `${ids[i]},${ids[i + 1]}`;
        const e = pairs.get(k) ?? { a: ids[i], b: ids[i + 1], n: 0 };
        e.n += c;
        pairs.set(k, e);
      }
    }
    let best: { a: number; b: number; n: number } | null = null;
    for (const e of pairs.values()) {
      if (
        best === null || e.n > best.n ||
        (e.n === best.n && (e.a < best.a || (e.a === best.a && e.b < best.b)))
      ) best = e;
    }
    if (best === null || best.n < Math.max(1, minFrequency)) break;
    const str = pieces[best.a] + pieces[best.b];
    let id = pieces.indexOf(str);
    if (id < 0) id = pieces.push(str) - 1;
    merges.push([pieces[best.a], pieces[best.b]]);
    for (const w of words) {
      const out: number[] = [];
      for (let i = 0; i < w.ids.length; i++) {
        if (i + 1 < w.ids.length && w.ids[i] === best.a && w.ids[i + 1] === best.b) {
          out.push(id);
          i++;
        } else out.push(w.ids[i]);
      }
      w.ids = out;
    }
  }
  return { merges, pieces };
}

/** A word's pieces under ranked merges: the lowest-rank pair present, all its places left to right. */
function applyMerges(word: string, rank: Map<string, number>): string[] {
  let syms = spell(word);
  for (;;) {
    let best = Infinity;
    for (let i = 0; i + 1 < syms.length; i++) {
      best = Math.min(best, rank.get(syms[i] + " " + syms[i + 1]) ?? Infinity);
    }
    if (best === Infinity) return syms;
    const out: string[] = [];
    for (let i = 0; i < syms.length; i++) {
      if (i + 1 < syms.length && rank.get(syms[i] + " " + syms[i + 1]) === best) {
        out.push(syms[i] + syms[i + 1]);
        i++;
      } else out.push(syms[i]);
    }
    syms = out;
  }
}

const counted = async (docs: string[]) => (await countDocuments(docs)).counts;

test("fast trainer = naive trainer on random corpora (ties, runs like aaaa, multi-byte)", async () => {
  // Few letters, so counts tie often and runs of one letter overlap; spaces, digits and punctuation
  // exercise the split; é and 日 are several bytes, so merges inside characters happen.
  const char = fc.constantFrom("a", "a", "a", "b", "b", "c", " ", " ", "\n", "1", ".", "é", "日");
  const doc = fc.array(char, { maxLength: 40 }).map((cs) => cs.join(""));
  let merged = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.array(doc, { minLength: 1, maxLength: 8 }),
      fc.integer({ min: 257, max: 320 }),
      fc.constantFrom(0, 0, 2, 3),
      async (docs, vocabSize, minFrequency) => {
        const counts = await counted(docs);
        if (counts.size === 0) return;
        const fast = trainBpeCounts(counts, { vocabSize, minFrequency });
        const slow = naiveBpe(counts, vocabSize, minFrequency);
        assertEquals(fast.merges, slow.merges, JSON.stringify(docs));
        assertEquals(fast.size, slow.pieces.length + 1);
        slow.pieces.forEach((p, i) => assert(fast.vocab[p] === i, `piece ${p} id`));
        merged += fast.merges.length;
      },
    ),
    { numRuns: 300 },
  );
  assert(merged > 1000, `only ${merged} merges compared`);
});

test("fast trainer = naive trainer on word tables with large counts and long runs", () => {
  const word = fc.array(fc.constantFrom("a", "b", "ab", "aa", "ba"), { minLength: 1, maxLength: 6 })
    .map((p) => p.join(""));
  fc.assert(
    fc.property(
      fc.array(fc.tuple(word, fc.integer({ min: 1, max: 1000 })), { minLength: 1, maxLength: 10 }),
      (entries) => {
        const counts = new Map(entries);
        const fast = trainBpeCounts(counts, { vocabSize: 300 });
        assertEquals(fast.merges, naiveBpe(counts, 300).merges, JSON.stringify(entries));
      },
    ),
    { numRuns: 300 },
  );
});

test("byte pieces: GPT-2's 256 byte ids, and every byte spelt as GPT-2's vocabulary spells it", () => {
  assertEquals(ALPHABET.length, 256);
  assertEquals([...BYTE_PIECES], ALPHABET);
  assertEquals(new Set(BYTE_CHARS).size, 256);
  for (let b = 0; b < 256; b++) assertEquals(ALPHABET[BYTE_IDS[b]], BYTE_CHARS[b], `byte ${b}`);
  // Printable bytes are themselves; space and newline are GPT-2's Ġ and Ċ; ids by code point.
  assertEquals([BYTE_CHARS[0x41], BYTE_CHARS[0x20], BYTE_CHARS[0x0a], BYTE_CHARS[0xad]], [
    "A",
    "Ġ",
    "Ċ",
    "Ń",
  ]);
  assertEquals(byteLevel(" héllo\n"), "ĠhÃ©lloĊ");
  assertEquals(fromByteLevel("ĠhÃ©lloĊ"), " héllo\n");
});

test("hand-worked: overlapping runs, count order, tie-break by ids not by strings", async () => {
  // "aaaa": (a,a) at 3 positions, merged left to right to "aa aa", then (aa,aa); then no pair.
  let r = await trainBpe(["aaaa"], { vocabSize: 1000 });
  assertEquals(r.merges, [["a", "a"], ["aa", "aa"]]);
  assertEquals([r.size, r.stopped, r.tokens, r.bytes], [259, "no pairs", 1, 4]);
  // "aaa" becomes "aa a", then "aaa".
  r = await trainBpe(["aaa"], { vocabSize: 1000 });
  assertEquals(r.merges, [["a", "a"], ["aa", "a"]]);
  // The HF course example: ug (20), un (16), hug (15), then …
  r = trainBpeCounts(new Map([["hug", 10], ["pug", 5], ["pun", 12], ["bun", 4], ["hugs", 5]]), {
    vocabSize: 256 + 3 + 1,
  });
  assertEquals(r.merges, [["u", "g"], ["u", "n"], ["h", "ug"]]);
  assertEquals(r.vocab, { ...r.vocab, ug: 256, un: 257, hug: 258, "<|endoftext|>": 259 });
  // Ties: all count 1 → (a,b) then (c,d) (smallest byte ids), then (Ġ, cd).
  r = await trainBpe(["ab cd"], { vocabSize: 1000 });
  assertEquals(r.merges, [["a", "b"], ["c", "d"], ["Ġ", "cd"]]);
  // After aa (id 256): (b,c) and (aa,c) both count 2; ids (65, 66) < (256, 66) though "aa" < "b".
  r = trainBpeCounts(new Map([["aa", 5], ["aac", 2], ["bc", 2]]), { vocabSize: 259 + 1 });
  assertEquals(r.merges, [["a", "a"], ["b", "c"], ["aa", "c"]]);
});

test("HF tokenizers' own trainer: the same 6888 merges in the same order (English, German, Japanese, emoji, code)", async () => {
  const dir = fileURLToPath(new URL("./golden/bpe_hf/", import.meta.url));
  const corpus = readFileSync(dir + "corpus.txt", "utf8");
  const hf = readFileSync(dir + "merges.txt", "utf8").split("\n").filter((l) => l !== "")
    .map((l) => l.split(" "));
  assertEquals(hf.length, 6888);
  // HF trains on a file line by line, each line with its newline.
  const lines = corpus.match(/[^\n]*\n|[^\n]+$/g)!;
  const r = await trainBpe(lines, { vocabSize: 256 + hf.length, specialTokens: [] });
  const first = r.merges.findIndex((m, i) => m[0] !== hf[i][0] || m[1] !== hf[i][1]);
  assert(
    first < 0,
    `merge ${first}: ours ${JSON.stringify(r.merges.slice(first, first + 3))}, HF ${
      JSON.stringify(hf.slice(first, first + 3))
    }`,
  );
  assertEquals(r.merges.length, hf.length);
  // The corpus exercises what matters: multi-byte pieces, indentation runs, German, Japanese.
  for (const p of ["Ã¼", "ĠĠĠĠ", "Ġdie", "ãģ"]) {
    assert(r.merges.some(([a, b]) => (a + b).includes(p)), p);
  }
});

test("hand-worked: HF trainer test_train's words give its merges re, are, is (min frequency 2)", () => {
  const counts = new Map([
    ["roses", 1],
    ["are", 2],
    ["red", 1],
    ["voilets", 1],
    ["blue", 1],
    ["BERT", 1],
    ["is", 2],
    ["big", 1],
    ["and", 1],
    ["so", 1],
    ["GPT-2", 1],
  ]);
  const r = trainBpeCounts(counts, { vocabSize: 30000, minFrequency: 2 });
  assertEquals(r.merges, [["r", "e"], ["a", "re"], ["i", "s"]]);
  assertEquals(r.stopped, "min frequency");
});

test("a merge that would spell a special token is never made; special ids come last", async () => {
  const r = await trainBpe(["ab ab ab xy"], { vocabSize: 1000, specialTokens: ["ab", "<pad>"] });
  assert(!r.merges.some(([a, b]) => a + b === "ab"), JSON.stringify(r.merges));
  assertEquals(r.specialTokens, [{ content: "ab", id: r.size - 2 }, {
    content: "<pad>",
    id: r.size - 1,
  }]);
});

// Training text: Brown sentences, German fortunes, Japanese, code, emoji.
const modules = fileURLToPath(new URL("../node_modules/", import.meta.url));
function german(): string[] {
  const dir = "/usr/share/games/fortunes/de/";
  try {
    return readdirSync(dir).filter((f) => f.endsWith(".u8")).sort().slice(0, 3)
      .map((f) => readFileSync(dir + f, "utf8"));
  } catch {
    console.log("(no /usr/share/games/fortunes/de: German text is the built-in lines only)");
    return [];
  }
}
const JAPANESE = [
  "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。",
  "東京都は日本の首都です。人口は約千四百万人で、世界有数の大都市です。",
  "今日はいい天気ですね。明日も晴れるでしょうか。",
];
const EXTRA = [
  "Über die Brücke gehen Mädchen und Jungen; äöüß ÄÖÜ.",
  "😀 family: 👨‍👩‍👧‍👦, flag: 🏳️‍🌈, skin tone: 👍🏽",
  "const x = (a) => a ** 2; // code\n\tif (x !== 3) { return null; }",
];
const trainingDocs = (): string[] => [
  ...brownLines(4000),
  ...german(),
  ...JAPANESE,
  ...EXTRA,
  readFileSync(modules + "fast-check/package.json", "utf8"),
];

let trained: BpeResult | null = null;
async function trained1024(): Promise<BpeResult> {
  trained ??= await trainBpe(trainingDocs(), { vocabSize: 1024 });
  return trained;
}

test("tokenizer.json: loads; exact size; <|endoftext|> is the last id, BOS and EOS, special", async () => {
  const r = await trained1024();
  assertEquals([r.size, r.stopped, r.merges.length], [1024, "size", 1023 - 256]);
  await withTemp(async (dir) => {
    await writeBpeTokenizer(dir, r);
    const tok = await loadTokenizer(dir);
    assertEquals(tok.vocabSize, 1024);
    assertEquals([tok.bosId, tok.eosId, tok.padId, tok.addBos], [1023, 1023, null, false]);
    assertEquals([...tok.specialIds], [1023]);
    assertEquals(tok.piece(1023), "<|endoftext|>");
    assertEquals(Array.from(tok.encode("a<|endoftext|>b")), [tok.encode("a")[0], 1023, 65]);
    // Byte ids are GPT-2's: "!" = 0, "a" = 64, space = Ġ = 220, newline = Ċ = 198.
    assertEquals([tok.piece(0), tok.piece(64), tok.piece(220), tok.piece(198)], [
      "!",
      "a",
      "Ġ",
      "Ċ",
    ]);
    const cfg = JSON.parse(await readFile(join(dir, "tokenizer_config.json"), "utf8"));
    assertEquals([cfg.bos_token, cfg.eos_token, cfg.add_bos_token], [
      "<|endoftext|>",
      "<|endoftext|>",
      false,
    ]);
  });
  // With addBos a template puts BOS first and the loader says so.
  const tok = tokenizerFromJson(bpeTokenizerJson(r, { addBos: true }), { add_bos_token: true });
  assertEquals([tok.addBos, tok.bosId], [true, 1023]);
});

test("tokenizer.json: decode(encode(s)) = s on Brown, German, Japanese, emoji, control bytes", async () => {
  const tok = tokenizerFromJson(bpeTokenizerJson(await trained1024()));
  const texts = [
    brownLines(5000).slice(4000).join("\n"),
    ...german().map((t) => t.slice(0, 20000)),
    ...JAPANESE,
    "未知の漢字：鬱・麒麟・薔薇",
    ...EXTRA,
    "\u0000\u0001 control \u007f and U+FFFF \uffff, astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢, tabs\t\r\n  spaces  ",
  ];
  let tokens = 0;
  for (const s of texts) {
    const ids = tok.encode(s);
    tokens += ids.length;
    assertEquals(tok.decode(ids), s, JSON.stringify(s.slice(0, 60)));
  }
  assert(tokens > 1000, `${tokens} tokens`);
  // Held-out English is compressed: 2.59 bytes per token at 1024 ids (Brown's spaced punctuation).
  const held = brownLines(5000).slice(4000).join("\n");
  const bpt = new TextEncoder().encode(held).length / tok.encode(held).length;
  assert(bpt > 2.4, `${bpt.toFixed(2)} bytes per token`);
});

test("tokenizer.json: every training word encodes to the pieces its merges imply", async () => {
  const r = await trained1024();
  const tok = tokenizerFromJson(bpeTokenizerJson(r));
  const rank = new Map(r.merges.map(([a, b], i) => [a + " " + b, i]));
  const counts = await counted(trainingDocs());
  let n = 0, multi = 0;
  for (const word of counts.keys()) {
    const want = applyMerges(word, rank);
    const got = Array.from(tok.encode(word), (id) => tok.piece(id));
    if (word.includes("<|endoftext|>")) continue; // cut out as the added token
    assertEquals(got, want, JSON.stringify(word));
    n++;
    if (want.length > 1) multi++;
  }
  assert(n > 10000 && multi > 1000, `${n} words, ${multi} of several pieces`);
  // The trainer's own token count of the training text is the sum of these.
  let tokens = 0;
  for (const [word, c] of counts) tokens += c * applyMerges(word, rank).length;
  assertEquals(r.tokens, tokens);
});

test("bad input: vocabulary too small, empty corpus, bad special tokens, unknown BOS", async () => {
  assertThrows(() => trainBpeCounts(new Map([["ab", 1]]), { vocabSize: 256 }), "vocabSize", "257");
  assertThrows(
    () => trainBpeCounts(new Map([["ab", 1]]), { vocabSize: 257, specialTokens: ["<a>", "<b>"] }),
    "258",
  );
  for (const docs of [[], ["", ""]]) {
    let err: unknown = null;
    await trainBpe(docs, { vocabSize: 300 }).catch((e) => err = e);
    assert(err instanceof BpeTrainError && err.message.includes("empty corpus"), String(err));
  }
  assertThrows(
    () => trainBpeCounts(new Map([["ab", 1]]), { vocabSize: 300, specialTokens: ["<x>", "<x>"] }),
    "twice",
  );
  assertThrows(
    () => trainBpeCounts(new Map([["ab", 1]]), { vocabSize: 300, specialTokens: ["a"] }),
    "byte piece",
  );
  assertThrows(() => trainBpeCounts(new Map([["ab", 0]]), { vocabSize: 300 }), '"ab"', "count");
  // A size the corpus cannot reach: fewer ids, and the result says why.
  const small = await trainBpe(["ab ab"], { vocabSize: 5000 });
  assertEquals([small.size, small.stopped, small.merges.length], [256 + 2 + 1, "no pairs", 2]);
  assertThrows(() => bpeTokenizerJson(small, { bos: "<s>" }), "bos", "<s>", "<|endoftext|>");
});

test("sae lm tokenizer: trains on a JSONL corpus, writes a folder loadTokenizer reads; bad args", async () => {
  await withTemp(async (dir) => {
    const lines = brownLines(2000);
    const rows = [];
    for (let i = 0; i < lines.length; i += 20) {
      rows.push(JSON.stringify({ text: lines.slice(i, i + 20).join(" "), domain: "en" }));
    }
    rows.push(JSON.stringify({ text: JAPANESE.join(""), domain: "ja" }));
    await writeFile(join(dir, "corpus.jsonl"), rows.join("\n") + "\n");
    const out = join(dir, "tok");
    const res = await runCli(
      "lm",
      "tokenizer",
      "--data",
      join(dir, "corpus.jsonl"),
      "--vocab",
      "600",
      "--out",
      out,
    );
    assertEquals(res.code, 0, res.err);
    assert(res.out.includes("101 documents"), res.out);
    assert(
      res.out.includes("600 ids = 256 bytes + 343 merges + 1 special (<|endoftext|> = 599)"),
      res.out,
    );
    assert(/bytes per token/.test(res.out) && res.out.includes("wrote"), res.out);
    const tok = await loadTokenizer(out);
    assertEquals([tok.vocabSize, tok.eosId], [600, 599]);
    const s = lines[2000 - 1] + " 東京";
    assertEquals(tok.decode(tok.encode(s)), s);
    // The same corpus through the library gives the same file.
    const again = await trainBpe(rows.map((r) => JSON.parse(r).text), { vocabSize: 600 });
    const written = JSON.parse(await readFile(join(out, "tokenizer.json"), "utf8"));
    assertEquals(written.model.merges, again.merges.map(([a, b]) => `${a} ${b}`));

    const bad = async (args: string[], ...parts: string[]) => {
      const r = await runCli("lm", "tokenizer", ...args);
      assertEquals(r.code, 2, `${args.join(" ")}: ${r.err}`);
      for (const p of parts) assert(r.err.includes(p), `${r.err} lacks ${p}`);
    };
    await bad(["--data", join(dir, "corpus.jsonl"), "--out", out], "--vocab");
    await bad(["--data", join(dir, "corpus.jsonl"), "--vocab", "100", "--out", out], "257");
    await bad(["--data", join(dir, "nope.jsonl"), "--vocab", "300", "--out", out], "nope.jsonl");
    await bad([
      "--data",
      join(dir, "corpus.jsonl"),
      "--vocab",
      "300",
      "--out",
      out,
      "--field",
      "body",
    ], "body");
    await bad(["--data", join(dir, "corpus.jsonl"), "--vocab", "x", "--out", out], "--vocab");
    await bad(["--vocab", "300", "--out", out, "--bogus", "1", "--data", "x"], "--bogus");
  });
  const help = await runCli("lm", "--help");
  assert(help.out.includes(BPE_HELP.split("\n")[0]), help.out);
});
